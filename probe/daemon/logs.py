"""Daemon logs: readable lines by default, JSON lines with --log-json; structured fields via extra."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

# Attributes every LogRecord has; anything else came in through `extra=` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                                 "asctime"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _time(record: logging.LogRecord) -> str:
    t = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": _time(record), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        doc.update(fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL message key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={_text(v)}" for k, v in fields(record).items())
        line = f"{_time(record)} {record.levelname:<7} {record.getMessage()}"
        if extra:
            line += " " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(v: Any) -> str:
    if isinstance(v, dict):
        s = ",".join(f"{k}:{x}" for k, x in v.items())
    elif isinstance(v, list | tuple):
        s = ",".join(str(x) for x in v)
    else:
        s = str(v)
    return json.dumps(s) if (not s or " " in s or '"' in s) else s


def setup(*, json_lines: bool, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Route the daemon's loggers (dnssec_probe.*) to stderr in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger("dnssec_probe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

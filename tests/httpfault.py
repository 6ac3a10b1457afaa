"""A scripted HTTP server on 127.0.0.1 for faults a real InfluxDB cannot produce on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Answer:
    status: int = 204
    body: str = ""
    delay: float = 0.0  # seconds before answering (a slow server)


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    answer: Answer

    @property
    def lines(self) -> list[str]:
        return self.body.decode().split("\n") if self.body else []


@dataclass
class FaultServer:
    """Answers every request from `script` (in order), then with `default` or `decide(body)`."""

    default: Answer = field(default_factory=Answer)
    decide: Callable[[bytes], Answer] | None = None
    script: deque[Answer] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)  # set when a request arrives
    port: int = 0
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def then(self, *answers: Answer) -> FaultServer:
        self.script.extend(answers)
        return self

    def accepted_lines(self) -> list[str]:
        """Lines of every request answered (or to be answered) 2xx, in arrival order."""
        return [line for r in self.received if 200 <= r.answer.status < 300 for line in r.lines]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.script:
            answer = self.script.popleft()
        elif self.decide is not None:
            answer = self.decide(body)
        else:
            answer = self.default
        # recorded on arrival: with a delay, the client may give up before the answer
        self.received.append(
            Received(request.method, request.path, dict(request.query), dict(request.headers), body, answer)
        )
        self.started.set()
        if answer.delay:
            with contextlib.suppress(TimeoutError):  # stop() cuts the wait short
                await asyncio.wait_for(self._closing.wait(), answer.delay)
        return web.Response(status=answer.status, text=answer.body or None,
                            content_type="application/json" if answer.body else None)

    async def start(self) -> FaultServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released): connect is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])

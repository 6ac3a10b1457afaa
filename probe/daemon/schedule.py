"""When rounds start: a drift-free grid t0 + k*interval with a little jitter (pure functions)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    """Round number on the grid (0-based) and the wall time it should start."""

    k: int
    start: float


def next_slot(t0: float, interval: float, done_k: int | None, now: float, jitter: float,
              rng: random.Random) -> Slot:
    """The slot after round `done_k` (None before the first). Drift-corrected: slots stay on
    the grid t0 + k*interval whatever the rounds took. A round that ran past the next slot
    makes the next round start at once, on the latest slot already begun; rounds never overlap."""
    k = 0 if done_k is None else done_k + 1
    planned = t0 + k * interval
    if done_k is not None and now > planned:
        # Overran: skip slots already gone, start now (late), then back on the grid.
        k = max(k, math.floor((now - t0) / interval))
        return Slot(k, now)
    return Slot(k, planned + (rng.uniform(0, jitter) if jitter > 0 else 0.0))

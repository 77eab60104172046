"""Periodic progress lines with rate and ETA, for logs that a person tails on a cluster."""

from __future__ import annotations

import logging
import time


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class Progress:
    """Counts work items and logs ``done/total (pct) rate ETA`` at most every ``every`` seconds."""

    def __init__(self, *, total: int, what: str, logger: logging.Logger, every: float = 10.0,
                 prefix: str = "") -> None:
        self.total, self.what, self.log, self.every, self.prefix = total, what, logger, every, prefix
        self.done_count = 0
        self.start = time.monotonic()
        self.last = self.start

    def step(self, n: int = 1, extra: str = "") -> None:
        self.done_count += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log.info(self.line(extra))

    def line(self, extra: str = "") -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done_count / elapsed if elapsed > 0 else float("nan")
        left = (self.total - self.done_count) / rate if rate and rate > 0 else float("nan")
        pct = 100.0 * self.done_count / self.total if self.total else 100.0
        eta = _duration(left) if left == left else "?"
        text = (f"{self.prefix}{self.done_count}/{self.total} {self.what} ({pct:.0f}%) "
                f"{rate:.1f} {self.what}/s, elapsed {_duration(elapsed)}, ETA {eta}")
        return f"{text} {extra}".rstrip()

    def done(self, extra: str = "") -> None:
        self.log.info(self.line(extra))

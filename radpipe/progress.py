"""Progress reporting for long work (ingest, downloads, uploads, training, evaluation).

On a terminal it redraws one line; in a log (a KFP task's logs, CI) it prints a line at each tenth of
the work, so that a pod log shows progress without megabytes of carriage returns.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


def _fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _fmt_amount(n: float, unit: str) -> str:
    if unit == "B":
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if abs(n) < 1024 or suffix == "GiB":
                return f"{n:.0f} {suffix}" if suffix == "B" else f"{n:.1f} {suffix}"
            n /= 1024
    return f"{n:g}"


HEARTBEAT_SECONDS = 10.0
"""In a log, a line at least this often while work moves, even between tenths (a slow download shows)."""


class Progress:
    """A bar over ``total`` units; use as a context manager and call :meth:`update`."""

    def __init__(self, label: str, total: int | None, unit: str = "", stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.count = 0
        self.started = time.monotonic()
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_line = self.started
        self._last_decile = -1
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc_type is not None)

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self._interactive:
            if now - self._last_draw >= 0.1 or self.count == self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
        else:
            decile = min(10, int(10 * self.count / self.total)) if self.total else -1
            if decile > self._last_decile or now - self._last_line >= HEARTBEAT_SECONDS:
                self._last_decile = max(decile, self._last_decile)
                self._last_line = now
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if self._interactive:
            self.stream.write("\r" + self._line() + ("  FAILED" if failed else "") + "\n")
        elif failed or not self.total or self._last_decile < 10:
            self.stream.write(self._line() + ("  FAILED" if failed else "") + "\n")
        self.stream.flush()

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        done = _fmt_amount(self.count, self.unit)
        if self.total:
            frac = min(1.0, self.count / self.total)
            bar = "#" * int(frac * 24)
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            return (
                f"{self.label}: {frac:4.0%} |{bar:<24}| {done}/{_fmt_amount(self.total, self.unit)} "
                f"[{_fmt_seconds(elapsed)}<{_fmt_seconds(eta)}]"
            )
        return f"{self.label}: {done} [{_fmt_seconds(elapsed)}]"


def log(message: str, stream: TextIO | None = None) -> None:
    """One line of stage narration, flushed at once so it interleaves correctly with KFP's own logs."""
    stream = stream or sys.stderr
    stream.write(message + "\n")
    stream.flush()

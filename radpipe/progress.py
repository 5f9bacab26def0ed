"""Where the progress of long work goes: a rich bar on a terminal, a log record at each tenth elsewhere.

A KFP task's output is a pipe (kfp.local) or a pod log, where a redrawn bar would be megabytes of
carriage returns. There a task logs one :data:`RECORD` line at each tenth of the work instead, which the
KFP UI shows as it is and `radpipe run` reads back into one live bar per stage
(``pipelines/run_display.py``). The drawing itself is rich's.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

RECORD = re.compile(
    r"progress (?P<label>.+): (?P<count>\d+)/(?P<total>\d+|\?)(?: (?P<unit>[^ ]+))?(?P<failed> FAILED)?$"
)
"""``progress ingest: 12/30 images`` (``?`` for an unknown total): what a task logs, and `radpipe run` parses."""


HEARTBEAT_SECONDS = 10.0
"""In a log, a record at least this often while work moves, even between tenths (a slow download shows)."""


def _interactive() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """Progress over ``total`` units (``None``: unknown); a context manager, advanced by :meth:`update`.

    ``unit`` names what is counted (``images``, ``batches``); ``B`` counts bytes and shows them as such.
    """

    def __init__(self, label: str, total: int | None, unit: str = "") -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.count = 0
        self._last_decile = -1
        self._last_record = time.monotonic()
        self._closed = False
        self._bar: Any = None
        self._task: Any = None
        if _interactive():
            self._bar, self._task = _rich_bar(label, total, unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc_type is not None)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        else:
            decile = min(10, 10 * self.count // self.total) if self.total else -1
            if decile > self._last_decile or time.monotonic() - self._last_record >= HEARTBEAT_SECONDS:
                self._last_decile = max(decile, self._last_decile)
                self._record()

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            if failed:
                self._bar.update(self._task, description=f"{self.label} FAILED")
            self._bar.stop()
        elif failed or not self.total or self._last_decile < 10:
            self._record(failed)

    def _record(self, failed: bool = False) -> None:
        self._last_record = time.monotonic()
        total = "?" if not self.total else str(self.total)
        unit = f" {self.unit}" if self.unit else ""
        logger.info(f"progress {self.label}: {self.count}/{total}{unit}{' FAILED' if failed else ''}")


def _rich_bar(label: str, total: int | None, unit: str) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    amount = DownloadColumn() if unit == "B" else MofNCompleteColumn()
    columns = [TextColumn("{task.description}"), BarColumn(), amount]
    if unit and unit != "B":
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    bar = RichProgress(*columns, console=Console(stderr=True))
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task

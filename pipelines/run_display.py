"""What `radpipe run` shows while the pipeline runs: one live bar per stage, the warnings, the summary.

kfp.local prints every task's whole output to stdout: its executor input as JSON, TensorFlow's C++
lines, every log record. All of that goes to the run's log file, line by line as it comes. The terminal
gets a bar per task driven by the tasks' progress records (``radpipe/progress.py``), the warnings and
errors they log, and, with ``-v``, their other records (``--log-level DEBUG``: every line).
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from radpipe.progress import RECORD

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_RECORD = re.compile(r"^\[KFP Executor \S+ \S+ (?P<level>[A-Z]+)\]: (?P<message>.*)$")
"""A record logged inside a task (kfp's executor format)."""
_RUNNER_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - (?P<level>[A-Z]+) - (?P<message>.*)$")
"""A record of kfp.local itself (its local format)."""
_OWN_RECORD = re.compile(r"^[a-z][a-z -]*: ")
"""radpipe's records start with their stage or module (``train: ...``); a library's warning does not (TensorFlow's
retracing notes, MLflow's deprecations): those are detail, on the terminal from -v on, like the CLI's own."""
_STARTED = re.compile(r"^Executing task '([^']+)'")
_FINISHED = re.compile(r"^Task '([^']+)' finished with status (\S+)")
_TASK_FAILED = re.compile(r"^Task \S+ failed with exception: ")
"""kfp.local's report that a loop task failed: ``radpipe run``'s closing error says why, with the failed task's own
message; kfp's text names a symptom (a missing output when a container's failure was missed), not the cause."""
_KFP_NOISE = ("Got executor_input", "Loading KFP component", "Wrote executor output", "Did not write output file")
"""kfp's own records about the executor: in the log file, on the terminal only at DEBUG."""


def plain(text: str) -> str:
    """``text`` without the colours kfp.local puts in its messages."""
    return _ANSI.sub("", text)


@dataclass
class _Task:
    name: str
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    detail: str = "starting"
    bar: Any = None


class RunDisplay:
    """Reads kfp.local's output one line at a time: writes it to the log, shows what matters.

    ``finished`` holds each task's wall time in the order tasks finished (a task per candidate inside
    the candidate loop), for the run's summary.
    """

    def __init__(self, log: TextIO, terminal: TextIO, level: int = logging.WARNING) -> None:
        from rich.console import Console

        self.log = log
        self.level = level
        self.console = Console(file=terminal, highlight=False, soft_wrap=True)
        self.finished: list[tuple[str, float]] = []
        self._tasks: dict[str, _Task] = {}
        self._current: _Task | None = None
        self._echoing = False
        self._bars: Any = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bars = Progress(
                TextColumn("{task.fields[stage]:<24}"),
                BarColumn(bar_width=24),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
            )

    def __enter__(self) -> RunDisplay:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def line(self, raw: str) -> None:
        """One line of kfp.local's output (no newline)."""
        text = plain(raw).rstrip()
        self.log.write(text + "\n")
        self.log.flush()
        if self.level <= logging.DEBUG:
            self._print(text)
        text = text.strip()  # kfp.local indents a task's lines
        if not text:
            return
        if match := _RUNNER_RECORD.match(text):
            self._runner_record(match["level"], match["message"])
            return
        match = _TASK_RECORD.match(text)
        if match is None:  # a continuation line, or a library writing to stderr: the log file has it
            if self._echoing and self.level == logging.INFO:
                self._print(f"  {text}")
            return
        level, message = logging.getLevelName(match["level"]), match["message"]
        self._echoing = False
        if (progress := RECORD.match(message)) and self._current is not None:
            self._progress(self._current, progress)
        elif isinstance(level, int) and (
            level >= logging.ERROR or (level == logging.WARNING and _OWN_RECORD.match(message))
        ):
            stage = self._current.name if self._current else "run"
            said = message if message.startswith(f"{stage}: ") else f"{stage}: {message}"
            self._print(f"{match['level'].lower()}: {said}")
            self._echoing = self.level <= logging.INFO
        elif self.level == logging.INFO and not message.startswith(_KFP_NOISE):
            self._print(message)
            self._echoing = True

    def _runner_record(self, level: str, message: str) -> None:
        if match := _STARTED.match(message):
            task = _Task(match.group(1))
            self._tasks[task.name] = self._current = task
            if self._bars is not None:
                task.bar = self._bars.add_task("", total=None, stage=task.name, detail=task.detail)
            elif self.level > logging.DEBUG:
                self._print(f"{task.name} ...")
        elif (match := _FINISHED.match(message)) and match.group(1) in self._tasks:
            task = self._tasks.pop(match.group(1))
            task.seconds = time.monotonic() - task.started
            self.finished.append((task.name, task.seconds))
            ok = match.group(2) == "SUCCESS"
            task.detail = "done" if ok else "FAILED"
            if task.bar is not None:
                self._bars.update(task.bar, total=1, completed=1 if ok else 0, detail=task.detail)
                self._bars.stop_task(task.bar)
            elif self.level > logging.DEBUG:
                self._print(f"{task.name} {task.detail} in {task.seconds:.0f} s")
            if self._current is task:
                self._current = None
        elif (
            level in ("WARNING", "ERROR", "CRITICAL") and self.level > logging.DEBUG and not _TASK_FAILED.match(message)
        ):
            self._print(f"{level.lower()}: {message}")

    def _progress(self, task: _Task, match: re.Match[str]) -> None:
        count, total = int(match["count"]), None if match["total"] == "?" else int(match["total"])
        unit = f" {match['unit']}" if match["unit"] else ""
        label = match["label"].removeprefix(f"{task.name}: ")
        task.detail = f"{label} {count}/{total if total is not None else '?'}{unit}"
        if task.bar is not None:
            self._bars.update(task.bar, total=total, completed=count, detail=task.detail)
        elif self.level == logging.INFO:
            self._print(f"{task.name}: {task.detail}")

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, emoji=False)


class LineWriter(io.TextIOBase):
    """A text stream that hands a :class:`RunDisplay` whole lines; what ``sys.stdout`` becomes for a run."""

    def __init__(self, display: RunDisplay) -> None:
        self.display = display
        self._pending = ""
        self._lock = threading.Lock()  # tasks inside a ParallelFor print from kfp's worker threads

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self.display.line(line)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._pending:
            self.display.line(self._pending)
            self._pending = ""
        super().close()


class RootRecords(logging.Filter):
    """While a run lasts, records logged on the root logger itself go through the display as kfp.local's own
    lines do, not straight to the terminal: kfp.local's orchestrator reports a failed loop task with
    ``logging.error`` (see :data:`_TASK_FAILED`). A context manager."""

    def __init__(self, display: RunDisplay) -> None:
        super().__init__()
        self.display = display

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root":
            return True
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        self.display.line(f"{stamp}.{int(record.msecs):03d} - {record.levelname} - {record.getMessage()}")
        return False

    def __enter__(self) -> RootRecords:
        logging.getLogger().addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeFilter(self)


def log_path(home: Path) -> Path:
    """A new file under ``.radpipe/logs/`` for one run's whole output."""
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"run-{stamp}.log"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"run-{stamp}-{n}.log"
    return path

"""Task processes of a local run: each in its own process group, ended with the run, whatever ends it.

kfp.local's ``SubprocessRunner`` starts every task with a plain ``subprocess.Popen`` and waits for it. A
SIGTERM to ``radpipe run`` (a CI job cancelled, ``kill``, a container stopped) then ended the parent and
left the task (``sh`` and its Python, TensorFlow and all) running on, and its temporary files in ``/tmp``.

Here each task starts in a new session, so that it and everything it starts form one process group, and
``radpipe run`` turns SIGTERM and SIGHUP into an exception (:class:`radpipe.errors.Terminated`), which
sends the signal on to every live task group at once (tasks inside a ParallelFor run in kfp's worker
threads, which the main thread waits for), waits, then SIGKILLs what is left. Ctrl-C no longer reaches the
tasks through the terminal (they are not in its foreground group) and takes the same path.
Tasks also get a private ``TMPDIR`` that the run removes at the end: kfp's own task command
(``mktemp -d`` for the component's source) never removes what it creates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from types import FrameType

from radpipe.errors import Terminated

logger = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
"""How long a task has to clean up after SIGTERM before it is killed."""
FORWARDED = (signal.SIGTERM, signal.SIGHUP)


def _end_groups(groups: set[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every group, wait up to ``grace`` for them to go, SIGKILL the rest."""
    for group in list(groups):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        for group in list(groups):
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                groups.discard(group)
        time.sleep(0.05)
    for group in list(groups):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
            logger.warning(f"task process group {group} did not stop within {grace:g} s; killed")
        groups.discard(group)


@contextlib.contextmanager
def task_processes() -> Iterator[None]:
    """While it lasts: tasks in their own process groups with a private TMPDIR; SIGTERM/SIGHUP raise
    :class:`Terminated`; on the way out every task group still alive is ended and the TMPDIR removed."""
    from kfp.local import subprocess_task_handler as handler

    groups: set[int] = set()
    workspace = tempfile.mkdtemp(prefix="radpipe-run-")

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        # kfp 2.17.0's run_local_subprocess, plus start_new_session and the group bookkeeping.
        env = {**os.environ, **(env_vars or {}), "TMPDIR": workspace}
        with subprocess.Popen(
            full_command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        ) as process:
            groups.add(process.pid)
            try:
                if process.stdout:
                    for line in iter(process.stdout.readline, ""):
                        print(line, end="")
                    print("\n")
                return process.wait()
            finally:
                _end_groups({process.pid} if process.poll() is None else set())
                groups.discard(process.pid)

    def terminate(signum: int, frame: FrameType | None) -> None:
        # Tasks inside a ParallelFor run in kfp's worker threads, and the main thread cannot leave the loop
        # before they end: so the signal goes on to every task group here, at once, and then unwinds.
        for group in list(groups):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signum)
        raise Terminated(signum)

    original = handler.run_local_subprocess
    previous = {sig: signal.signal(sig, terminate) for sig in FORWARDED}
    handler.run_local_subprocess = run_local_subprocess
    try:
        yield
    finally:
        handler.run_local_subprocess = original
        _end_groups(groups)
        for sig, old in previous.items():
            signal.signal(sig, old)
        shutil.rmtree(workspace, ignore_errors=True)

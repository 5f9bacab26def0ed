"""A real ``mlflow server`` process on this machine, for as long as a ``with`` block lasts.

``radpipe run --runner docker`` needs one: tasks in containers cannot open the embedded sqlite store, so
the run serves that same store (and its artifact folder) over HTTP on loopback, and the containers, on the
host's network, talk to it as they would to the cluster's MLflow. The tests use the same class to start,
stop and restart servers ("MLflow went down") without mocking MLflow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from radpipe.errors import RadpipeError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Until ``url`` answers below 500; fails early if ``proc`` (the server) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class MlflowServer:
    """``python -m mlflow server`` in its own process group, on ``127.0.0.1:<port>``.

    Args:
        root: working directory and log folder (``mlflow-server.log``).
        args: what follows ``python -m mlflow``, or a callable from the port to it; default: sqlite in
            ``root/mlflow.db``, artifacts proxied to ``root/mlartifacts``.
        python: the interpreter that has MLflow.
        env: the server's whole environment (default: this process's, without a tracking URI and without
            MLflow 3's job-runner workers, which radpipe does not use).
        port: default a free one.
    """

    def __init__(
        self,
        root: Path,
        args: list[str] | Callable[[int], list[str]] | None = None,
        python: Path | str = sys.executable,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = (args or self.default_args)(self.port) if args is None or callable(args) else args
        self.python = str(python)
        self.env = (
            env
            if env is not None
            else {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        )
        self.proc: subprocess.Popen | None = None

    def default_args(self, port: int) -> list[str]:
        return [
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            (self.root / "mlartifacts").as_uri(),
            *self.listen_args(port),
        ]

    @staticmethod
    def listen_args(port: int) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    @classmethod
    def for_store(cls, backend_store_uri: str, artifact_root: str, root: Path) -> MlflowServer:
        """A server over an existing store whose artifacts clients write themselves (``artifact_root``, a
        ``file://`` folder they can reach): the embedded store of local runs, served to containers."""
        port = free_port()
        args = [
            "server",
            "--backend-store-uri",
            backend_store_uri,
            "--default-artifact-root",
            artifact_root,
            "--no-serve-artifacts",
            *cls.listen_args(port),
        ]
        return cls(root, args=args, port=port)

    def start(self, timeout: float = 120.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log_path = self.root / "mlflow-server.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "mlflow", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
                start_new_session=True,  # its own process group: `mlflow server` runs uvicorn as a child
            )
        try:
            wait_for_http(f"{self.url}/health", timeout=timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RadpipeError(f"could not start an MLflow server ({exc}); its log ({log_path}):\n{tail}") from exc
        return self

    def stop(self) -> None:
        """Stop the server and its uvicorn worker (the process group this object started)."""
        if self.proc is None:
            return
        group = os.getpgid(self.proc.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # a worker that outlived the parent
        self.proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

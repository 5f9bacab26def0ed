"""How fast ``radpipe run`` fails when things go wrong (issue 16): the numbers in docs/benchmarks.md, "Hardening".

    PYTHONPATH=. .venv/bin/python bench/hardening.py

1. MLflow down: ``radpipe run`` with ``MLFLOW_TRACKING_URI`` at a port nobody listens on; seconds from start
   to the exit (the preflight, before any stage).
2. MLflow killed during registration: ``register()`` (evaluate-and-register's last step) against a real
   ``mlflow server`` that is stopped where the model card would be uploaded, with the task environment
   ``radpipe run`` sets from ``tracking.retry_budget_seconds`` (default 60); seconds from the kill to the error.
3. SIGTERM: ``radpipe run`` on a tiny data set (32 px, random weights) stopped while prepare-base runs;
   seconds from the signal to the exit, and whether any task process or temporary file survived.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

TINY = ["model.weights=none", "model.image_size=32", "model.scales=[1.0]", "register.model_name=tiny"]


def radpipe_run(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    args = [sys.executable, "-m", "radpipe", "run", "--data", "data"]
    for item in TINY:
        args += ["--set", item]
    (workdir / "tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(workdir / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def mlflow_down(root: Path) -> float:
    from radpipe.mlflow_server import free_port

    started = time.monotonic()
    proc, lines = radpipe_run(root, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    proc.wait()
    seconds = time.monotonic() - started
    print("".join(lines).strip().splitlines()[-1])
    return seconds


def killed_during_registration(root: Path) -> float:
    from mlflow import MlflowClient

    from radpipe import tracking
    from radpipe.errors import RegistryError
    from radpipe.mlflow_server import MlflowServer
    from radpipe.registration import register

    os.environ.update(tracking.retry_env(60.0))  # what radpipe run sets for its tasks by default
    server = MlflowServer(root / "mlflow").start()
    client = MlflowClient(server.url)
    run_id = client.create_run(client.create_experiment("bench")).info.run_id
    killed: list[float] = []

    def publish(version: str) -> None:
        server.stop()
        killed.append(time.monotonic())
        client.set_model_version_tag("tiny", version, "radpipe.card", "uploaded")

    try:
        register(client, "tiny", f"runs:/{run_id}/model", run_id, {}, "", True, publish)
    except RegistryError as exc:
        print(str(exc)[:300])
    return time.monotonic() - killed[0]


def sigterm(root: Path) -> tuple[float, int, int]:
    import psutil

    from conftest import make_tree

    make_tree(root / "data", {"train/cats": 10, "train/dogs": 10, "test/cats": 3, "test/dogs": 3})
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP")}
    proc, lines = radpipe_run(root, {"MLFLOW_TRACKING_URI": "", **env})
    while not any("Executing task" in re.sub(r"\x1b\[[0-9;]*m", "", ln) and "prepare-base" in ln for ln in lines):
        time.sleep(0.1)
    time.sleep(2)
    tree = psutil.Process(proc.pid).children(recursive=True)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    seconds = time.monotonic() - sent
    _, alive = psutil.wait_procs(tree, timeout=1)
    return seconds, len(alive), len(list((root / "tmp").iterdir()))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="radpipe-bench-") as tmp:
        root = Path(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        (root / "down").mkdir()
        (root / "down" / "data").mkdir()
        down = mlflow_down(root / "down")
        (root / "term").mkdir()
        term, alive, leftovers = sigterm(root / "term")
        killed = killed_during_registration(root / "reg")
    print("| what | seconds |\n|---|---|")
    print(f"| `radpipe run` with MLflow down: start to error | {down:.1f} |")
    print(f"| MLflow killed during registration: kill to error (retry budget 60 s) | {killed:.1f} |")
    print(f"| SIGTERM to `radpipe run` during prepare-base: signal to exit | {term:.1f} |")
    print(f"task processes left: {alive}; files left in TMPDIR: {leftovers}")


if __name__ == "__main__":
    main()

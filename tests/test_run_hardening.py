"""``radpipe run`` when things go wrong, over real processes: SIGTERM mid-run, an unreachable MLflow server, a
server killed during registration, a stage that fails (corrupt weights). Nothing may be left running, in
/tmp, or RUNNING in MLflow, and the errors must come in seconds, naming the address and what to do."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from radpipe import registry, tracking
from radpipe.cli import main
from radpipe.config import load_config
from radpipe.errors import RadpipeError, RegistryError
from radpipe.mlflow_server import MlflowServer, free_port
from radpipe.pipelines.local_run import run_local
from radpipe.registration import register

from conftest import AS_EXPORTED, make_tree

TINY = [
    "model.weights=none",
    "model.image_size=32",
    "model.scales=[1.0]",
    f"model.intensity={AS_EXPORTED}",
    "register.model_name=tiny",
]


def runs_by_role(store: Path) -> dict[str, list[str]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("radpipe")
    found: dict[str, list[str]] = {}
    for run in client.search_runs([experiment.experiment_id]):
        found.setdefault(run.data.tags.get("radpipe.role", "?"), []).append(run.info.status)
    return found


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RADPIPE_HOME", raising=False)
    make_tree(tmp_path / "data", {"train/cats": 10, "train/dogs": 10, "test/cats": 3, "test/dogs": 3})
    return tmp_path


def start_run(workdir: Path, *sets: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, list[str]]:
    """``radpipe run`` as a user starts it, its output collected line by line in the background."""
    (workdir / "tmp").mkdir(exist_ok=True)
    args = [sys.executable, "-m", "radpipe", "run", "--data", "data"]
    for item in [*TINY, *sets]:
        args += ["--set", item]
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(workdir / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def wait_for_line(proc: subprocess.Popen, lines: list[str], text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines):  # kfp colours task names
        assert proc.poll() is None, "".join(lines)[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n" + "".join(lines)[-3000:]
        time.sleep(0.1)


def test_sigterm_stops_every_task_removes_temp_files_and_fails_the_mlflow_run(workdir: Path) -> None:
    proc, lines = start_run(workdir)
    wait_for_line(proc, lines, "prepare-base ...")  # radpipe run's line as a stage starts
    time.sleep(2)  # the task is importing TensorFlow
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert any("executor_main" in " ".join(p.cmdline()) for p in tree), [p.cmdline() for p in tree]
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    seconds = time.monotonic() - sent
    _, alive = psutil.wait_procs(tree, timeout=1)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    assert rc == 128 + signal.SIGTERM, "".join(lines)[-3000:]
    assert seconds < 15, seconds
    assert "stopped its tasks" in "".join(lines)
    assert list((workdir / "tmp").iterdir()) == []  # the tasks' TMPDIR and kfp's mktemp folders are gone
    assert runs_by_role(workdir / ".radpipe" / "mlflow.db") == {"pipeline": ["FAILED"]}


def test_a_failing_stage_leaves_no_mlflow_run_running(workdir: Path) -> None:
    (workdir / "corrupt.h5").write_bytes(b"this is not an HDF5 file")
    with pytest.raises(RadpipeError, match="prepare-base failed"):
        run_local(load_config(None, [*TINY, "data.uri=data", f"model.weights={workdir / 'corrupt.h5'}"]))
    assert runs_by_role(workdir / ".radpipe" / "mlflow.db") == {"pipeline": ["FAILED"]}


def test_an_unreachable_tracking_server_is_reported_before_any_stage_runs(workdir: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc, lines = start_run(workdir, env={"MLFLOW_TRACKING_URI": address})
    rc = proc.wait(timeout=120)
    seconds = time.monotonic() - started
    output = "".join(lines)
    assert rc == 2, output
    assert f"cannot reach MLflow at {address}" in output and "start the tracking server" in output
    assert "Executing task" not in output and not (workdir / ".radpipe" / "pipeline_root").exists()
    assert seconds < 30, seconds


def test_retry_budget_bounds_mlflow_retries() -> None:
    for budget in (10, 60, 300):
        env = tracking.retry_env(budget)
        retries, timeout = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), int(env["MLFLOW_HTTP_REQUEST_TIMEOUT"])
        sleeps = sum(2 ** (n - 1) for n in range(2, retries + 1))  # urllib3: none before the first retry
        assert sleeps + (retries + 1) * timeout <= budget + 2 * (retries + 1)
        assert retries >= 1
    with pytest.raises(RadpipeError, match=r"tracking\.retry_budget_seconds"):
        load_config(None, ["tracking.retry_budget_seconds=0"])


def register_tiny(client, publish) -> None:  # type: ignore[no-untyped-def]
    run_id = client.create_run(client.create_experiment("hardening")).info.run_id
    register(
        client,
        "tiny",
        source=f"runs:/{run_id}/model",
        run_id=run_id,
        tags={"radpipe.model_card": "runs:/x/evaluation/model_card.md", "radpipe.gate": "passed"},
        description="the final description",
        passed=True,
        publish=publish,
    )


def test_mlflow_killed_during_registration_fails_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    for key, value in tracking.retry_env(10).items():
        monkeypatch.setenv(key, value)
    server = MlflowServer(tmp_path / "mlflow").start()
    client = MlflowClient(server.url)
    timing: dict[str, float] = {}

    def publish(version: str) -> None:  # the model card upload: the server dies here
        server.stop()
        timing["killed"] = time.monotonic()
        client.set_model_version_tag("tiny", version, "radpipe.card_uploaded", "yes")

    with pytest.raises(RegistryError) as caught:
        register_tiny(client, publish)
    seconds = time.monotonic() - timing["killed"]
    assert seconds < 30, seconds
    message = str(caught.value)
    assert server.url in message and "stays 'pending'" in message and "No alias moved" in message
    restarted = MlflowServer(tmp_path / "mlflow", port=server.port).start()
    try:
        version = MlflowClient(restarted.url).get_model_version("tiny", "1")
        assert version.tags[registry.REGISTRATION_TAG] == registry.PENDING
        assert "radpipe.model_card" not in version.tags  # never points at a card that was not uploaded
        assert version.description == registry.PENDING_DESCRIPTION
        assert registry.aliases(MlflowClient(restarted.url), "tiny") == {}
    finally:
        restarted.stop()


def test_a_failed_registration_is_marked_failed_and_listed(use_mlflow: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    def publish(version: str) -> None:
        raise OSError("disk full while writing the model card")

    with pytest.raises(OSError, match="disk full"):
        register_tiny(MlflowClient(use_mlflow), publish)
    version = MlflowClient(use_mlflow).get_model_version("tiny", "1")
    assert version.tags[registry.REGISTRATION_TAG] == registry.FAILED
    assert version.description.startswith("FAILED registration: OSError: disk full")
    assert "radpipe.model_card" not in version.tags
    capsys.readouterr()
    assert main(["models", "tiny"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == "1" and row[3] == "failed"

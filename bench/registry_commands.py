"""How long the registry commands take on the embedded store (issue 19): docs/benchmarks.md, "Registry commands".

    .venv/bin/python bench/registry_commands.py [--repeats 5]

Makes an embedded store the way ``radpipe run`` leaves one (through MLflow: model ``chest-ct`` with ten
versions, champion and challenger set), then times each command as a user runs it, a fresh
``radpipe`` process from a folder below the store, and prints the median and the slowest of ``--repeats``
runs. For comparison it times the same listing through MLflow's client (``import mlflow`` plus its SQL
store), which is what the commands cost before they read the store themselves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "radpipe models": ["models"],
    "radpipe models chest-ct": ["models", "chest-ct"],
    "radpipe promote chest-ct --version 9": ["promote", "chest-ct", "--version", "9"],
    "radpipe rollback chest-ct": ["rollback", "chest-ct"],
}
THROUGH_MLFLOW = (
    "import sys; from radpipe import registry; "
    "print(registry.versions_table(registry.list_versions(registry.client(sys.argv[1]), 'chest-ct')))"
)


def make_store(db: Path) -> None:
    import mlflow

    from radpipe import registry

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("bench")
    for _ in range(10):
        run_id = client.create_run(experiment).info.run_id
        tags = {registry.GATE_TAG: registry.PASSED, "radpipe.test_accuracy": "0.9000"}
        version = registry.create_version(client, "chest-ct", f"runs:/{run_id}/model", run_id, tags, "bench")
        registry.mark_complete(client, "chest-ct", version)
        registry.move_gate_aliases(client, "chest-ct", version)


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".radpipe"
        home.mkdir()
        make_store(home / "mlflow.db")
        below = Path(tmp) / "project" / "notebooks"
        below.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RADPIPE_HOME")}
        commands = {label: [sys.executable, "-m", "radpipe", *argv] for label, argv in COMMANDS.items()}
        commands["the same listing through MLflow's client"] = [
            sys.executable,
            "-c",
            THROUGH_MLFLOW,
            f"sqlite:///{home / 'mlflow.db'}",
        ]
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(repeats):  # in order, so each rollback undoes the promote before it
            for label, args in commands.items():
                times[label].append(timed(args, below, env))
        print(f"{'command':45} {'median s':>9} {'max s':>7}  ({repeats} runs, load {os.getloadavg()[0]:.1f})")
        for label, taken in times.items():
            print(f"{label:45} {statistics.median(taken):9.2f} {max(taken):7.2f}")


if __name__ == "__main__":
    main()

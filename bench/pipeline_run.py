"""Benchmark a whole local pipeline run: wall time per stage, every candidate, val and test metrics.

    python bench/pipeline_run.py --data ../shared/data/chest-ct \
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        [--config FILE] [--set KEY=VALUE ...] [--label spine-default] [--keep DIR]

Runs in a fresh working directory (its own embedded MLflow and feature cache, so nothing is reused from
an earlier run; deleted afterwards unless --keep names it: then `cd DIR && mlflow ui` shows the run),
prints a Markdown summary for docs/benchmarks.md and writes the raw numbers to bench/results/<label>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpus = os.cpu_count()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpus} CPU cores ({model}), load average at start {load:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights")
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--label", default="pipeline-run")
    parser.add_argument(
        "--keep", metavar="DIR", help="run in DIR (new or empty) and keep it: its MLflow store has the plots and report"
    )
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from radpipe.config import load_config
    from radpipe.pipelines.local_run import run_local

    overrides = [*args.set, f"data.uri={json.dumps(str(Path(args.data).resolve()))}"]
    if args.weights:
        overrides.append(f"model.weights={json.dumps(str(Path(args.weights).resolve()))}")
    config_path = Path(args.config).resolve() if args.config else None
    config = load_config(config_path, overrides)
    at_start = machine()
    started = time.monotonic()
    if args.keep:
        keep = Path(args.keep).resolve()
        if keep.exists() and any(keep.iterdir()):
            parser.error(f"--keep {keep}: not empty; give a new folder so that nothing is reused")
        keep.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.nullcontext(str(keep))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="radpipe-bench-") as workdir
    ):
        result = run_local(config, workdir)
        wall = time.monotonic() - started
        import mlflow

        client = mlflow.MlflowClient(result.tracking_uri)
        name, version = result.model_uri.removeprefix("models:/").rsplit("/", 1)
        registered = client.get_model_version(name, version)
        parent_id = client.get_run(registered.run_id).data.tags.get("mlflow.parentRunId", "")
        candidates = []
        for run in client.search_runs(
            [client.get_run(registered.run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        ):
            metrics = run.data.metrics
            candidates.append(
                {
                    "candidate": run.data.tags.get("radpipe.candidate", run.info.run_name),
                    "chosen": run.info.run_id == registered.run_id,
                    "train_seconds": metrics.get("train_seconds"),
                    "best_epoch": metrics.get("best_epoch"),
                    # A train task logs its kept epoch as best_val_*; an ensemble's run, made by
                    # evaluate-and-register, logs val_*.
                    **{
                        f"best_{k}": metrics.get(f"best_{k}", metrics.get(k))
                        for k in ("val_accuracy", "val_macro_f1", "val_loss")
                        if f"best_{k}" in metrics or k in metrics
                    },
                    "test_accuracy": metrics.get("test_accuracy"),
                    "test_macro_f1": metrics.get("test_macro_f1"),
                }
            )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    record = {
        "label": args.label,
        "command": " ".join(sys.argv),
        "git_commit": commit.strip(),
        "machine": at_start,
        "wall_seconds": wall,
        "task_seconds": result.task_seconds,
        "model_uri": result.model_uri,
        "chosen_candidate": result.candidate,
        "test_accuracy": result.test_accuracy,
        "test_macro_f1": result.test_macro_f1,
        "candidates": sorted(candidates, key=lambda c: c["candidate"]),
        "config": config.to_dict(),
    }
    out = REPO / "bench" / "results" / f"{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))

    print(f"\n### {args.label}\n")
    print(f"- command: `{record['command']}` (commit {record['git_commit']})")
    print(f"- machine: {at_start}")
    print(f"- wall time: {wall:.0f} s in all; " + ", ".join(f"{t} {s:.0f} s" for t, s in result.task_seconds))
    chosen = f"`{result.candidate}`, test accuracy {result.test_accuracy:.4f}, macro-F1 {result.test_macro_f1:.4f}"
    print(f"- chosen: {chosen}\n")
    print("| candidate | train s | best epoch | val acc | val macro-F1 | val loss | test acc | test macro-F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for c in record["candidates"]:

        def cell(key: str, c: dict = c) -> str:
            value = c.get(key)
            return (
                "" if value is None else f"{value:.4f}" if isinstance(value, float) and value < 10 else f"{value:.0f}"
            )

        mark = " (chosen)" if c["chosen"] else ""
        keys = ("train_seconds", "best_epoch", "best_val_accuracy", "best_val_macro_f1", "best_val_loss")
        cells = [cell(k) for k in (*keys, "test_accuracy", "test_macro_f1")]
        print(f"| {c['candidate']}{mark} | " + " | ".join(cells) + " |")
    print(f"\nraw: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark what the evaluation report costs on top of scoring: bootstrap intervals, plots, card, HTML.

    python bench/evaluate_report.py [--images 315] [--classes 4] [--samples 1000] [--gradcam 2]

Synthetic scores of the size of the chest CT test split (no model, no MLflow): the numbers are the
stage's added CPU time, not its scoring or its MLflow uploads. Prints a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from radpipe.components.evaluate_and_register.champion import ChampionScore
from radpipe.components.evaluate_and_register.evaluate import compute_metrics
from radpipe.components.evaluate_and_register.explain import GradcamSample, pick
from radpipe.components.evaluate_and_register.gate import decide
from radpipe.components.evaluate_and_register.intervals import bootstrap
from radpipe.config import GateConfig
from radpipe.modelspec import ModelSpec
from radpipe.preprocessing import Preprocessing
from radpipe.reporting import plots
from radpipe.reporting.findings import DataSummary, Findings
from radpipe.reporting.model_card import build_model_card, md_table
from radpipe.reporting.report import build_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=315)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--gradcam", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = [f"class-{i}" for i in range(args.classes)]
    labels = rng.integers(0, args.classes, args.images)
    logits = rng.normal(0, 1, (args.images, args.classes))
    logits[np.arange(args.images), labels] += 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    times: dict[str, float] = {}
    import matplotlib.figure  # noqa: F401 - imports are not what we measure
    import sklearn.metrics  # noqa: F401

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = fn()
        times[name] = time.perf_counter() - started
        return result

    evaluation = timed("metrics + calibration", lambda: compute_metrics(labels, probabilities, names))
    evaluation.intervals = timed(
        f"bootstrap ({args.samples} resamples)",
        lambda: bootstrap(labels, evaluation.predictions, names, args.samples),
    )
    image = rng.integers(0, 255, (224, 224, 3)).astype(np.uint8)
    samples = [
        GradcamSample(image, rng.random((224, 224)), int(labels[i]), int(evaluation.predictions[i]), 0.9, "")
        for i in pick(labels, probabilities, args.gradcam)
    ]
    counts = {s: {n: 50 for n in names} for s in ("train", "val", "test")}
    history = [
        {"epoch": e, "phase": "head", "loss": 1 / e, "accuracy": 0.5, "val_loss": 1 / e, "val_accuracy": 0.5}
        for e in range(1, 41)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        written = timed(
            "7 plots (PNG)",
            lambda: plots.write_plots(Path(tmp), evaluation, counts, history, 30, samples, args.gradcam),
        )
        spec = ModelSpec(names, Preprocessing(224), "mobilenet_v2", "imagenet")
        findings = Findings(
            "bench", "1", "default", "run", "parent", spec, evaluation, DataSummary("0" * 64, "", counts),
            decide(evaluation, ChampionScore("champion"), GateConfig()), GateConfig(), ChampionScore("champion"),
            "challenger",
        )  # fmt: skip
        card = timed("model card (Markdown)", lambda: build_model_card(findings))
        page = timed("HTML report", lambda: build_report(findings, card, written))
    load = os.getloadavg()[0]
    print(f"{args.images} test images, {args.classes} classes; {os.cpu_count()} CPU cores, load average {load:.1f}\n")
    rows = [(name, f"{seconds:.2f}") for name, seconds in times.items()]
    print(md_table(["step", "seconds"], [*rows, ("**total**", f"**{sum(times.values()):.2f}**")]))
    print(f"\nHTML report: {len(page) / 1e6:.2f} MB with every plot embedded")


if __name__ == "__main__":
    main()

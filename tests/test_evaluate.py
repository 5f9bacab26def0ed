"""evaluate: metrics, the ROC curve KFP shows, and choosing on validation only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from radpipe.components.evaluate_and_register.evaluate import (
    Candidate,
    choose,
    compute_metrics,
    micro_roc,
    read_candidates,
)
from radpipe.errors import RadpipeError
from radpipe.modelspec import ModelSpec
from radpipe.preprocessing import Preprocessing

CLASSES = ["a", "b", "c"]


def test_metrics_on_a_known_confusion() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    )
    ev = compute_metrics(labels, probabilities, CLASSES)
    assert ev.metrics["accuracy"] == pytest.approx(5 / 6)
    assert ev.confusion == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert ev.per_class["a"]["recall"] == pytest.approx(0.5) and ev.per_class["a"]["precision"] == 1.0
    assert ev.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert ev.metrics["macro_f1"] == pytest.approx(np.mean([2 / 3, 0.8, 1.0]))
    assert 0.9 < ev.metrics["roc_auc_macro_ovr"] <= 1.0
    assert ev.per_class["c"]["support"] == 2


def test_a_class_missing_from_test_does_not_break_metrics() -> None:
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    ev = compute_metrics(labels, probabilities, CLASSES)
    assert ev.metrics["macro_f1"] == 1.0  # over the classes the test split has
    assert "roc_auc" not in ev.per_class["c"] and ev.per_class["c"]["support"] == 0


def test_roc_for_kfp_has_no_infinity_and_equal_lengths() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    probabilities = rng.dirichlet([1, 1, 1], 400)
    fpr, tpr, thresholds = micro_roc(compute_metrics(labels, probabilities, CLASSES), max_points=50)
    assert len(fpr) == len(tpr) == len(thresholds) <= 50
    assert all(math.isfinite(t) and t <= 1.0 for t in thresholds)
    json.dumps(thresholds, allow_nan=False)


def candidate(name: str, **val: float) -> Candidate:
    spec = ModelSpec(CLASSES, Preprocessing(32), "mobilenet_v2", "none")
    return Candidate(Path(name), spec, name, "", val)


def test_choice_is_by_validation_loss_by_default_with_the_others_breaking_ties() -> None:
    sharp = candidate("sharp", val_loss=0.40, val_macro_f1=0.80, val_accuracy=0.85)
    lucky = candidate("lucky", val_loss=0.45, val_macro_f1=0.90, val_accuracy=0.90)
    assert choose([lucky, sharp]).name == "sharp"
    assert choose([lucky, sharp], "val_macro_f1").name == "lucky"
    assert choose([candidate("x", val_accuracy=0.9), candidate("y", val_accuracy=0.8)], "val_accuracy").name == "x"
    tie = [
        candidate("p", val_macro_f1=0.8, val_accuracy=0.8, val_loss=0.5),
        candidate("q", val_macro_f1=0.8, val_accuracy=0.8, val_loss=0.4),
    ]
    assert choose(tie, "val_macro_f1").name == "q"  # equal F1 and accuracy: the lower loss
    assert choose([candidate("m", val_loss=0.3), candidate("n")]).name == "m"  # a missing metric ranks last
    same = [candidate("b", val_macro_f1=0.5), candidate("a", val_macro_f1=0.5)]
    assert choose(same).name == choose(list(reversed(same))).name  # deterministic on exact ties


def test_no_candidates_is_an_error() -> None:
    with pytest.raises(RadpipeError, match="no trained candidates"):
        read_candidates([])

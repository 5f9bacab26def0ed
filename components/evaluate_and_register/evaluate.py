"""Choose the best candidate on the validation split, then score it once on the test split.

The choice never looks at the test split: test metrics describe the chosen model, they do not choose it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radpipe.batches import predict_in_batches
from radpipe.components.evaluate_and_register.calibration import Reliability, reliability
from radpipe.components.evaluate_and_register.intervals import Intervals
from radpipe.config import SELECT_BY
from radpipe.dataset import Split
from radpipe.errors import DataError, RadpipeError
from radpipe.modelspec import ModelSpec, load_model_dir, read_spec

logger = logging.getLogger(__name__)


def selection_key(metrics: dict[str, float], select_by: str = "val_loss") -> tuple[float, ...]:
    """Higher is better: ``select_by`` first, then the others (a loss counts negated, a missing metric worst)."""

    def score(key: str) -> float:
        if key == "val_loss":
            return -metrics.get(key, float("inf"))
        return metrics.get(key, float("-inf"))

    return tuple(score(k) for k in (select_by, *(k for k in SELECT_BY if k != select_by)))


@dataclass
class Candidate:
    path: Path | None
    """None for an ensemble built in this stage (its model is in memory)."""
    spec: ModelSpec
    name: str
    run_id: str
    val_metrics: dict[str, float]

    def selection_key(self, select_by: str = "val_loss") -> tuple[float, ...]:
        return selection_key(self.val_metrics, select_by)


def read_candidates(paths: list[str]) -> list[Candidate]:
    """The trained candidates in ``paths`` (KFP ``Model`` folders), named and with their MLflow runs as train
    recorded them."""
    candidates = []
    for i, path in enumerate(paths):
        spec = read_spec(path)
        extra = spec.extra
        candidates.append(
            Candidate(
                path=Path(path),
                spec=spec,
                name=str(extra.get("candidate", f"candidate-{i}")),
                run_id=str(extra.get("mlflow_run_id", "")),
                val_metrics=dict(extra.get("val_metrics", {})),
            )
        )
    if not candidates:
        raise RadpipeError("no trained candidates reached evaluate-and-register; check the train tasks' logs")
    return candidates


def ranked(candidates: list[Candidate], select_by: str = "val_loss") -> list[Candidate]:
    """Best first; the name breaks exact ties, so the order never depends on the order tasks finished."""
    by_name = sorted(candidates, key=lambda c: c.name)
    return sorted(by_name, key=lambda c: c.selection_key(select_by), reverse=True)


def choose(candidates: list[Candidate], select_by: str = "val_loss") -> Candidate:
    order = ranked(candidates, select_by)
    best = order[0]
    logger.info(f"evaluate: candidates ranked by {select_by} on validation")
    for c in order:
        marker = "*" if c is best else " "
        metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(c.val_metrics.items()))
        logger.info(f"evaluate: {marker} {c.name}: {metrics}")
    return best


@dataclass
class Evaluation:
    """Test-split results of one model."""

    class_names: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    paths: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    reliability: Reliability | None = None
    intervals: Intervals | None = None
    """Bootstrap confidence intervals; set by the stage when ``evaluate.bootstrap_samples`` > 0."""

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def compute_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], calibration_bins: int = 10
) -> Evaluation:
    """Accuracy, macro-F1, per-class precision/recall/F1, one-vs-rest ROC-AUC, confusion matrix, calibration."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    k = len(class_names)
    predicted = probabilities.argmax(axis=1)
    ids = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=ids, zero_division=0)
    present = [i for i in ids if (labels == i).any()]
    onehot = np.eye(k)[labels]
    auc = {}
    for i in present:
        if 0 < onehot[:, i].sum() < len(labels):
            auc[i] = float(roc_auc_score(onehot[:, i], probabilities[:, i]))
    evaluation = Evaluation(class_names, labels, probabilities, [])
    evaluation.metrics = {
        "accuracy": float((predicted == labels).mean()),
        # Macro averages over the classes the test split has; a class with no test images has no recall.
        "macro_f1": float(np.mean([f1[i] for i in present])),
        "macro_precision": float(np.mean([precision[i] for i in present])),
        "macro_recall": float(np.mean([recall[i] for i in present])),
        "images": float(len(labels)),
    }
    if auc:
        evaluation.metrics["roc_auc_macro_ovr"] = float(np.mean(list(auc.values())))
    if len(labels):
        evaluation.reliability = reliability(labels, probabilities, calibration_bins)
        evaluation.metrics["ece"] = evaluation.reliability.ece
    evaluation.per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            **({"roc_auc": auc[i]} if i in auc else {}),
        }
        for i, name in enumerate(class_names)
    }
    evaluation.confusion = confusion_matrix(labels, predicted, labels=ids).tolist()
    return evaluation


def evaluate_split(
    model: Any, data: Split, batch_size: int, calibration_bins: int = 10, label: str = "evaluate: scoring"
) -> Evaluation:
    """Score ``model`` on a decoded split."""
    if len(data) == 0:
        raise DataError(f"the data set has no {data.name} images to evaluate on; ingest makes one, re-run it")
    probabilities = predict_in_batches(model, data.images, batch_size, f"{label} {data.name}")
    evaluation = compute_metrics(data.labels, probabilities, data.class_names, calibration_bins)
    evaluation.paths = data.paths
    return evaluation


def micro_roc(evaluation: Evaluation, max_points: int = 200) -> tuple[list[float], list[float], list[float]]:
    """One-vs-rest ROC pooled over classes (what KFP's single-curve ROC view can show); no infinities."""
    from sklearn.metrics import roc_curve

    k = len(evaluation.class_names)
    onehot = np.eye(k)[evaluation.labels]
    fpr, tpr, thresholds = roc_curve(onehot.ravel(), evaluation.probabilities.ravel())
    thresholds = np.minimum(thresholds, 1.0)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr.tolist(), tpr.tolist(), thresholds.tolist()


def load_candidate(candidate: Candidate) -> Any:
    if candidate.path is None:
        raise RadpipeError(f"candidate '{candidate.name}' has no model folder to load")
    model, _ = load_model_dir(candidate.path)
    return model

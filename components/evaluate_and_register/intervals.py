"""Bootstrap confidence intervals of the test metrics, for the model card.

A test split of a few hundred CT slices gives metrics with wide uncertainty; the card says how wide.
Percentile bootstrap over test images (resampled with replacement), vectorised over resamples. A resample
in which a metric is undefined (a class with no images, or never predicted) is left out of that metric's
interval, rather than counted as 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

PER_CLASS = ("precision", "recall", "f1")
OVERALL = ("accuracy", "macro_f1")
_CHUNK = 200


@dataclass(frozen=True)
class Intervals:
    level: float
    samples: int
    overall: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_class: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "level": self.level,
            "samples": self.samples,
            "method": "percentile bootstrap over test images",
            "overall": {k: list(v) for k, v in self.overall.items()},
            "per_class": {c: {k: list(v) for k, v in m.items()} for c, m in self.per_class.items()},
        }


def _per_resample(labels: np.ndarray, predicted: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Metrics of each resample (rows of ``labels``/``predicted``); NaN where undefined."""
    tp = np.stack([((labels == c) & (predicted == c)).sum(axis=1) for c in range(k)], axis=1).astype(float)
    support = np.stack([(labels == c).sum(axis=1) for c in range(k)], axis=1).astype(float)
    called = np.stack([(predicted == c).sum(axis=1) for c in range(k)], axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(called > 0, tp / called, np.nan)
        f1 = np.where(support > 0, 2 * tp / (support + called), np.nan)
        macro_f1 = np.nanmean(f1, axis=1)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (labels == predicted).mean(axis=1),
        "macro_f1": macro_f1,
    }


def _bounds(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap(
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: list[str],
    samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Intervals:
    """``level`` intervals of accuracy, macro-F1 and per-class precision/recall/F1."""
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    n, k = len(labels), len(class_names)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN row: left out below
        for start in range(0, samples, _CHUNK):
            rows = rng.integers(0, n, size=(min(_CHUNK, samples - start), n))
            for key, values in _per_resample(labels[rows], predicted[rows], k).items():
                parts.setdefault(key, []).append(values)
    metrics = {key: np.concatenate(chunks) for key, chunks in parts.items()}
    return Intervals(
        level=level,
        samples=samples,
        overall={key: _bounds(metrics[key], level) for key in OVERALL},
        per_class={
            name: {key: _bounds(metrics[key][:, i], level) for key in PER_CLASS} for i, name in enumerate(class_names)
        },
    )

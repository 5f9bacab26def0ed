"""Calibration: does a predicted probability of 0.9 come true nine times in ten?

A clinician reading "92 % adenocarcinoma" takes the number at face value, so the report shows a reliability
diagram and the expected calibration error (ECE): the gap between confidence and accuracy, averaged over
equal-width confidence bins and weighted by how many test images fall in each bin (Guo et al., 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radpipe.json_safe import json_safe


@dataclass(frozen=True)
class Reliability:
    """Per-bin mean confidence and accuracy of the top-1 prediction; empty bins hold NaN."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    ece: float

    def to_dict(self) -> dict[str, object]:
        """JSON-safe: empty bins become ``None``."""
        return {
            "edges": [float(e) for e in self.edges],
            "confidence": json_safe(self.confidence),
            "accuracy": json_safe(self.accuracy),
            "counts": [int(c) for c in self.counts],
            "ece": self.ece,
        }


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> Reliability:
    """Bin the top-1 confidence into ``bins`` equal-width bins over [0, 1]."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    filled = counts > 0
    total = max(int(counts.sum()), 1)
    ece = float(np.sum(counts[filled] / total * np.abs(accuracy[filled] - mean_confidence[filled])))
    return Reliability(edges, mean_confidence, accuracy, counts, ece)

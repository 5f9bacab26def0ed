"""The validation scores every candidate is ranked by, computed one way.

train records them for each candidate's kept epoch; evaluate-and-register computes them for an ensemble
of candidates; ``evaluate.select_by`` names one of them. One definition keeps the two comparable.
"""

from __future__ import annotations

import numpy as np


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log probability of the true class, clipped at 1e-7 (one confident mistake would
    otherwise be infinite); also what temperature scaling minimises."""
    true = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(true, 1e-7, 1.0))))


def validation_scores(labels: np.ndarray, probabilities: np.ndarray, classes: int) -> dict[str, float]:
    """``val_accuracy``, ``val_macro_f1`` and ``val_loss`` (``log_loss``)."""
    from sklearn.metrics import f1_score

    predicted = probabilities.argmax(axis=1)
    ids = list(range(classes))
    return {
        "val_accuracy": float((predicted == labels).mean()),
        "val_macro_f1": float(f1_score(labels, predicted, labels=ids, average="macro", zero_division=0)),
        "val_loss": log_loss(labels, probabilities),
    }

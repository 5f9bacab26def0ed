"""The validation scores every candidate is ranked by, computed one way.

train records them for each candidate's kept epoch; evaluate-and-register computes them for an ensemble
of candidates; ``evaluate.select_by`` names one of them. One definition keeps the two comparable.
"""

from __future__ import annotations

import numpy as np


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log probability of the true class (scikit-learn's, which clips at the dtype's epsilon so
    one confident mistake is not infinite); also what temperature scaling minimises. Every column is a class,
    whether or not ``labels`` holds it: a validation split may lack a class."""
    from sklearn.metrics import log_loss as sklearn_log_loss

    # Rows re-normalised in their own dtype: float32 outputs widened to float64 sum to 1 only within float32's
    # precision, which scikit-learn's float64 check warns about (it would re-normalise them the same way).
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    return float(sklearn_log_loss(labels, normalised, labels=list(range(probabilities.shape[1]))))


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

"""Numbers fit for JSON: NaN and infinities have no JSON form, and KFP metadata, MLflow's JSON artifacts,
metrics and tags all refuse them. One definition of "finite", for every place a metric leaves the process.

An undefined metric (a recall of a class with no test images, an empty calibration bin) is NaN in memory;
in a document it becomes ``null`` (:func:`json_safe`), among scalars it is left out (:func:`finite_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None, through dicts, lists, tuples and numpy arrays;
    numpy scalars become Python numbers."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics that have a value, as floats: for MLflow metrics, KFP ``Metrics`` and version tags."""
    return {k: float(v) for k, v in metrics.items() if json_safe(float(v)) is not None}

"""Many images through a model a batch at a time: the one loop, for evaluation, calibration, train's feature
cache, ``radpipe predict`` and serving's explanations.

Why batches: a whole test split at once would hold every activation of every image in memory; one image at
a time wastes the vectorised kernels. ``predict_on_batch`` (not ``predict``) because it builds no
``tf.data`` pipeline per call and returns numpy directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np


def batch_slices(total: int, batch_size: int) -> Iterator[slice]:
    """``slice(0, b), slice(b, 2b), ...`` covering ``range(total)``."""
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def predict_in_batches(model: Any, images: np.ndarray, batch_size: int, label: str = "") -> np.ndarray:
    """``model.predict_on_batch`` over ``images`` as float32, ``batch_size`` at a time, concatenated.

    With a ``label``, progress is shown under it (:class:`radpipe.progress.Progress`).
    """
    from radpipe.progress import Progress

    outputs = []
    with Progress(label, len(images), "images") if label else contextlib.nullcontext() as bar:
        for part in batch_slices(len(images), batch_size):
            batch = np.asarray(images[part], dtype=np.float32)
            outputs.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
            if bar is not None:
                bar.update(len(batch))
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)

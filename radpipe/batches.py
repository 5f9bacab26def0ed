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

INPUT_PIXEL_BUDGET = 2_600_000
"""Input pixels one model call may hold: 8 images of 560², 12 of 448², 51 of 224² (so a 224 px model keeps
the batch it was asked for). The activations, which grow with the pixels of a call, are what takes the
memory: radpipe's default model (224-560 px, each scale and its mirror) took 8.5 GiB for train's feature
pass at 32 images a call, over the train pod's 8 GiB limit (docs/benchmarks.md, "Honest validation")."""


GRADIENT_PIXEL_BUDGET = INPUT_PIXEL_BUDGET // 4
"""The same for Grad-CAM's eager pass with a gradient (2 images of 560²): measured on the default model, 8
images at once took 3.7 GiB more than scoring the test split, 2 at a time nothing more."""


def model_batch_size(model: Any, requested: int, budget: int = INPUT_PIXEL_BUDGET) -> int:
    """``requested``, or fewer images when that many would exceed ``budget`` input pixels at the model's
    input size; at least 1."""
    shape = getattr(model, "input_shape", None)
    try:
        pixels = int(shape[1]) * int(shape[2])
    except (TypeError, IndexError, ValueError):  # no fixed input size: nothing to bound by
        return max(1, requested)
    return max(1, min(requested, budget // max(1, pixels)))


def batch_slices(total: int, batch_size: int) -> Iterator[slice]:
    """``slice(0, b), slice(b, 2b), ...`` covering ``range(total)``."""
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def predict_in_batches(model: Any, images: np.ndarray, batch_size: int, label: str = "") -> np.ndarray:
    """``model.predict_on_batch`` over ``images`` as float32, ``batch_size`` at a time (fewer for a model
    with a large input: :func:`model_batch_size`), concatenated.

    With a ``label``, progress is shown under it (:class:`radpipe.progress.Progress`).
    """
    from radpipe.progress import Progress

    outputs = []
    with Progress(label, len(images), "images") if label else contextlib.nullcontext() as bar:
        for part in batch_slices(len(images), model_batch_size(model, batch_size)):
            batch = np.asarray(images[part], dtype=np.float32)
            outputs.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
            if bar is not None:
                bar.update(len(batch))
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)

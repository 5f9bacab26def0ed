"""Which test images the report's Grad-CAM grid shows, and their heatmaps (through the shared radpipe.gradcam).

Per class: the most confident correct predictions and the most confident wrong ones -- a reader learns
most from what the model is sure about, right and wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radpipe.components.evaluate_and_register.evaluate import Evaluation
from radpipe.dataset import Split
from radpipe.gradcam import GradCam
from radpipe.modelspec import ModelSpec


@dataclass(frozen=True)
class GradcamSample:
    image: np.ndarray
    """uint8 (H, W, 3), as the model saw it."""
    heatmap: np.ndarray
    """(H, W) in [0, 1], explaining the predicted class."""
    true: int
    predicted: int
    confidence: float
    path: str

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


def pick(labels: np.ndarray, probabilities: np.ndarray, per_class: int) -> list[int]:
    """Indices: for each class in order, up to ``per_class`` correct then up to ``per_class`` wrong."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    chosen: list[int] = []
    for c in range(probabilities.shape[1]):
        for correct in (True, False):
            mask = (labels == c) & ((predicted == c) == correct)
            found = np.flatnonzero(mask)
            order = found[np.argsort(-confidence[found], kind="stable")]
            chosen.extend(int(i) for i in order[:per_class])
    return chosen


def gradcam_samples(
    model: Any, spec: ModelSpec, split: Split, evaluation: Evaluation, per_class: int
) -> list[GradcamSample]:
    if per_class <= 0:
        return []
    chosen = pick(evaluation.labels, evaluation.probabilities, per_class)
    if not chosen:
        return []
    images = split.images[chosen]
    predicted = evaluation.predictions[chosen]
    heatmaps = GradCam(model, spec).heatmaps(images.astype(np.float32), class_index=predicted)
    return [
        GradcamSample(
            image=images[j],
            heatmap=heatmaps[j],
            true=int(evaluation.labels[i]),
            predicted=int(predicted[j]),
            confidence=float(evaluation.probabilities[i].max()),
            path=split.paths[i],
        )
        for j, i in enumerate(chosen)
    ]

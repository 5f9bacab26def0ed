"""Random transforms of training images (``train.augmentation``), used two ways.

End to end (``train.head_on_features`` off, and fine-tuning), the layers sit in front of the model in a
training-only wrapper and draw new transforms every epoch. On cached features, where the head never sees
an image, ``train.augmented_copies`` fixed random copies of every training and validation image go through
the frozen backbone once, and their features join the head's fit: more images for a head whose learning
curve is still falling (docs/benchmarks.md, "Honest validation").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radpipe.batches import predict_in_batches
from radpipe.config import AugmentationConfig


def augmentation_layers(config: AugmentationConfig, seed: int) -> list[Any]:
    import keras

    layers: list[Any] = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="constant", seed=seed + 1))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant", seed=seed + 2))
    if config.translation:
        t = config.translation
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode="constant", seed=seed + 3))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 4))
    return layers


class _Augmenting:
    """``model`` behind ``augment``, drawn anew at every call, as :func:`predict_in_batches` calls a model."""

    def __init__(self, model: Any, augment: Any) -> None:
        self.model, self.augment = model, augment
        self.input_shape, self.output_shape = model.input_shape, model.output_shape

    def predict_on_batch(self, batch: np.ndarray) -> Any:
        return self.model.predict_on_batch(np.clip(np.asarray(self.augment(batch, training=True)), 0.0, 255.0))


def augmented_outputs(
    model: Any, images: np.ndarray, config: AugmentationConfig, copies: int, seed: int, batch_size: int, label: str
) -> np.ndarray:
    """``model``'s outputs for ``copies`` random transforms of every image: ``(copies, images, ...)``.

    The transforms run eagerly in front of ``model`` (a Keras model in inference mode would not apply them)
    and are the same for the same ``seed``, images and batch size.
    """
    import keras

    augmenting = _Augmenting(model, keras.Sequential(augmentation_layers(config, seed), name="augment"))
    return np.stack(
        [predict_in_batches(augmenting, images, batch_size, f"{label} ({copy + 1}/{copies})") for copy in range(copies)]
    )

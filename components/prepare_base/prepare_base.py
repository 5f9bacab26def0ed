"""prepare-base: a ``keras.applications`` backbone with pretrained weights and a fresh classification head.

The head sits on globally pooled backbone features. The backbone is a nested model named ``backbone``,
so that train can freeze and unfreeze it and Grad-CAM can reach its last convolution by name.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from radpipe import dicom, storage
from radpipe.backbones import BACKBONES, Backbone
from radpipe.components.prepare_base.backbones import (
    build_backbone,
    imagenet_weights,
    normalization_layer,
)
from radpipe.config import ModelConfig
from radpipe.errors import WeightsError
from radpipe.modelspec import ModelSpec, save_model_dir
from radpipe.preprocessing import Preprocessing

logger = logging.getLogger(__name__)


def resolve_weights(weights: str, backbone: Backbone, workdir: Path) -> Path | None:
    """'none' -> None (random, only when asked for), 'imagenet' -> the cached file, else fetch the URI."""
    if weights == "none":
        logger.warning(f"prepare-base: backbone '{backbone.name}' starts from RANDOM weights (model.weights=none)")
        return None
    if weights == "imagenet":
        return imagenet_weights(backbone)
    path = storage.fetch(weights, workdir, label="prepare-base: downloading weights")
    if not path.is_file():
        raise WeightsError(f"model.weights={weights!r} is not a file; give the path or URI of a .h5 weights file")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_classifier(config: ModelConfig, num_classes: int, weights_path: Path | None, seed: int = 0) -> Any:
    """normalize -> backbone -> dropout -> [dense -> dropout] -> softmax; with several ``model.scales``,
    normalize -> (resize_<s> -> backbone) per scale -> concatenated as ``features`` -> the same head;
    with ``model.mirror`` each scale's features are the average over the image and its mirror image.

    Several scales share one backbone (one set of weights, run once per scale): a slice's texture shows at
    the full size, its overall shape at the smaller ones, and the head weighs both.
    """
    import keras

    from radpipe.layers import Mirror

    keras.utils.set_random_seed(seed)
    backbone = BACKBONES[config.backbone]
    scales = config.pixel_scales()
    views = len(scales) > 1 or scales[0] != config.image_size or config.mirror
    base = build_backbone(backbone, None if views else config.image_size, weights_path, pooled_layers(config))
    inputs = keras.Input((config.image_size, config.image_size, 3), name="image", dtype="float32")
    x = normalization_layer(backbone)(inputs)
    if views:
        pooled = []
        for size in scales:
            view = x if size == config.image_size else resize_layer(size)(x)
            features = base(view, training=False)
            if config.mirror:
                mirrored = base(Mirror(name=f"mirror_{size}")(view), training=False)
                features = keras.layers.Average(name=f"mirror_average_{size}")([features, mirrored])
            pooled.append(features)
        x = keras.layers.Concatenate(name=FEATURES_LAYER)(pooled) if len(pooled) > 1 else pooled[0]
        if len(pooled) == 1:
            x = keras.layers.Identity(name=FEATURES_LAYER)(x)
    else:
        x = base(x, training=False)
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    if config.dense_units:
        x = keras.layers.Dense(config.dense_units, activation="relu", name="head_dense")(x)
        x = keras.layers.Dropout(config.dropout, name="head_dense_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"radpipe_{backbone.name}")


def pooled_layers(config: ModelConfig) -> list[str]:
    """The backbone's earlier activations pooled beside its last: what the graph is built with and what the
    record says, from one place."""
    return [BACKBONES[config.backbone].intermediate_layer] if config.intermediate_features else []


FEATURES_LAYER = "features"
"""The multi-scale model's concatenation of every scale's pooled features: the head's input."""


def resize_layer(size: int) -> Any:
    """The antialiased downscale in front of the backbone at ``size`` px (Grad-CAM reuses it by name)."""
    import keras

    return keras.layers.Resizing(size, size, interpolation="bilinear", antialias=True, name=f"resize_{size}")


def prepare_base(config: ModelConfig, class_names: list[str], output_dir: str | Path, workdir: str | Path) -> ModelSpec:
    """Build the base model for ``class_names`` and save it as a radpipe model folder."""
    if len(class_names) < 2:
        raise WeightsError(f"a classifier needs at least two classes, got {class_names}")
    backbone = BACKBONES[config.backbone]
    weights_path = resolve_weights(config.weights, backbone, Path(workdir))
    scales = config.pixel_scales()
    logger.info(
        f"prepare-base: {backbone.name} at {', '.join(map(str, scales))} px, weights: {weights_path or 'random'}"
    )
    model = build_classifier(config, len(class_names), weights_path)
    spec = ModelSpec(
        class_names=list(class_names),
        preprocessing=Preprocessing(
            image_size=config.image_size,
            windows=dicom.parse_windows(config.window),
            framing=config.framing,
            intensity=config.intensity,
        ),
        backbone=backbone.name,
        weights=config.weights,
        feature_layer=backbone.feature_layer,
        pooled_layers=pooled_layers(config),
        scales=scales if len(scales) > 1 or scales[0] != config.image_size or config.mirror else [],
        mirror=config.mirror,
        extra={
            "model_config": config.to_dict(),
            "weights_sha256": sha256_file(weights_path) if weights_path else None,
            "parameters": int(model.count_params()),
        },
    )
    save_model_dir(model, spec, output_dir)
    logger.info(f"prepare-base: saved {model.count_params():,} parameters to {output_dir}")
    return spec

"""The backbones radpipe knows (the table is ``radpipe.backbones``) as Keras models, and their ImageNet weights.

Each model takes RGB float32 pixels in [0, 255]; the backbone's own input normalisation is the first
layer of the graph (``normalize``), so that no caller ever has to know a backbone's convention.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The table itself is radpipe.backbones; re-exported so that `backbones.BACKBONES` still names it here.
from radpipe.backbones import BACKBONES as BACKBONES
from radpipe.backbones import Backbone
from radpipe.errors import WeightsError

logger = logging.getLogger(__name__)

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imagenet_weights(backbone: Backbone, download_timeout: float = 60.0) -> Path:
    """The no-top ImageNet weights file: from the Keras cache, else downloaded into it.

    Never falls back to random weights: if the file cannot be had, the error says how to provide it.
    """
    cached = keras_cache_dir() / backbone.weights_file
    if cached.is_file():
        return cached
    import keras

    logger.info(f"prepare-base: downloading ImageNet weights for {backbone.name} from {backbone.weights_url}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout)
    try:
        path = keras.utils.get_file(
            backbone.weights_file,
            backbone.weights_url,
            cache_dir=str(cached.parent.parent),
            cache_subdir="models",
            file_hash=backbone.weights_md5,
        )
    except Exception as exc:
        raise WeightsError(
            f"ImageNet weights for backbone '{backbone.name}' are not in the Keras cache ({cached}) and could not "
            f"be downloaded from {backbone.weights_url} ({exc.__class__.__name__}: {exc}). Fetch that file where "
            f"there is internet, then either copy it to {cached} or pass it with --weights PATH_OR_URI "
            "(model.weights; a path, s3:// or https:// URI). To train from random weights on purpose, set "
            "model.weights=none."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def normalization_layer(backbone: Backbone) -> Any:
    """The backbone's input normalisation as a serialisable built-in layer named ``normalize``."""
    import keras
    import numpy as np

    if backbone.normalization == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")
    if backbone.normalization == "caffe":
        # RGB -> BGR and ImageNet mean subtraction as a fixed 1x1 convolution: a plain Conv2D saves and
        # loads everywhere, where a Lambda layer would need unsafe deserialisation.
        layer = keras.layers.Conv2D(3, 1, name="normalize", trainable=False)
        layer.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_channel, in_channel in enumerate((2, 1, 0)):
            kernel[0, 0, in_channel, out_channel] = 1.0
        layer.set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, dtype="float32")])
        return layer
    return keras.layers.Identity(name="normalize")


def build_backbone(
    backbone: Backbone, image_size: int | None, weights_path: Path | None, pooled_layers: Sequence[str] = ()
) -> Any:
    """The headless backbone with global average pooling, named ``backbone``.

    ``image_size`` None builds it for any input size (one backbone shared by several scales).
    ``pooled_layers`` (earlier activations, ``ModelSpec.pooled_layers``) are average-pooled (``<name>_pool``)
    after the last layer's pooled output (``pooled``): one vector per image either way, so scales, mirror
    averaging, the feature cache and the head see a wider vector and nothing else changes.
    ``weights_path`` None means random initialisation. EfficientNet's graph differs when Keras itself
    loads ImageNet weights (an extra rescaling), so for the cached ImageNet file we let Keras load it.
    """
    import keras

    constructor = getattr(keras.applications, backbone.constructor)
    weights: str | None = None if weights_path is None else str(weights_path)
    if backbone.normalization == "builtin" and weights_path == keras_cache_dir() / backbone.weights_file:
        weights = "imagenet"
    try:
        with warnings.catch_warnings():
            # A size-free MobileNetV2 "loads the weights for input shape (224, 224)": the ones meant, since
            # the no-top weights are the same for every input size.
            warnings.filterwarnings("ignore", message=".*input_shape.*", category=UserWarning)
            model = constructor(
                include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg"
            )
    except (ValueError, OSError) as exc:
        raise WeightsError(
            f"cannot load {weights_path} into backbone '{backbone.name}' at {image_size or 'any'} px: {exc}. "
            f"The file must hold no-top weights of {backbone.constructor} (e.g. {backbone.weights_file})."
        ) from exc
    if not pooled_layers:
        return keras.Model(model.input, model.output, name="backbone")
    earlier = [
        keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(model.get_layer(name).output) for name in pooled_layers
    ]
    pooled = keras.layers.Concatenate(name="pooled")([model.output, *earlier])
    return keras.Model(model.input, pooled, name="backbone")

"""The ``keras.applications`` backbones radpipe knows: the one list, with each one's weights and layers.

Data only, so that the config can check ``model.backbone`` against it without importing Keras; prepare-base
(``components/prepare_base/backbones.py``) builds them and fetches their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str
    """Attribute of ``keras.applications``."""
    weights_file: str
    """Canonical no-top ImageNet weights file name in the Keras cache (``~/.keras/models/``)."""
    weights_url: str
    weights_md5: str | None
    normalization: str
    """'tf' ([-1, 1]), 'caffe' (BGR, ImageNet mean subtracted) or 'builtin' (the model normalises)."""
    feature_layer: str
    """The last convolutional activation: Grad-CAM's target layer."""
    intermediate_layer: str
    """An activation one stage before the last (1/16 of the input; VGG16's at 1/8) whose average-pooled
    output joins the last one's with ``model.intermediate_features``: finer texture than the last layer
    describes (docs/benchmarks.md, "What the head learns from")."""


BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(
        "mobilenet_v2",
        "MobileNetV2",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        _GCS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        None,
        "tf",
        "out_relu",
        "block_13_expand_relu",
    ),
    "vgg16": Backbone(
        "vgg16",
        "VGG16",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _GCS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
        "caffe",
        "block5_conv3",
        "block4_conv3",
    ),
    "resnet50": Backbone(
        "resnet50",
        "ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _GCS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
        "caffe",
        "conv5_block3_out",
        "conv4_block6_out",
    ),
    "efficientnet_b0": Backbone(
        "efficientnet_b0",
        "EfficientNetB0",
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
        "50bc09e76180e00e4465e1a485ddc09d",
        "builtin",
        "top_activation",
        "block6a_expand_activation",
    ),
}

"""Keras layers of radpipe's own, registered so that every saved radpipe model loads with them.

Importing this module registers them (``radpipe.modelspec`` and ``radpipe.classifier`` do, before any
model is loaded); a model needing one never requires unsafe deserialisation of a Lambda layer.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="radpipe")
class Mirror(keras.layers.Layer):
    """The image mirrored left to right (images are ``(batch, height, width, channels)``).

    prepare-base feeds the backbone each image and its mirror image and averages the two pooled feature
    vectors, so that the head sees features that do not depend on which side of the slice a finding is on
    (docs/benchmarks.md, "Resolution and scales").
    """

    def call(self, inputs: Any) -> Any:
        return keras.ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

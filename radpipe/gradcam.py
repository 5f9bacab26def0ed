"""Grad-CAM: where in the image the model looked, for the report's grid and for serving's ``explain``.

Works on any radpipe model: prepare-base builds ``normalize -> backbone -> linear head``, and the model's
record names the backbone and its last convolutional activation (``ModelSpec.feature_layer``). An ensemble
(``ModelSpec.members``) is explained as it predicts: the mean of its members' heatmaps for the class the
ensemble predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radpipe.batches import GRADIENT_PIXEL_BUDGET, batch_slices, model_batch_size
from radpipe.modelspec import ModelSpec


class GradCam:
    """Heatmaps for one model; builds the gradient graph once and reuses it for every call."""

    def __init__(self, model: Any, spec: ModelSpec) -> None:
        import keras

        self._model = model
        self._members: list[tuple[GradCam, int]] = []
        if spec.is_ensemble:
            self._members = [
                (GradCam(model.get_layer(member.extra["layer"]), member), member.preprocessing.image_size)
                for member in spec.members
            ]
            return
        if not spec.feature_layer:
            raise ValueError("this model's record names no feature layer; Grad-CAM needs one")
        backbone = model.get_layer(spec.backbone_layer)
        self._normalize = model.get_layer("normalize")
        # The backbone split at its last convolution: the part up to it runs outside the gradient tape,
        # the pooling after it inside. A tape around the whole backbone kept every activation of every
        # scale and mirror view for the gradient (24 GiB for 8 images at 224-560 px); only the last
        # convolution's output needs one.
        # Earlier activations pooled beside the last (``spec.pooled_layers``) come out of the first part
        # too: they feed the pooling, but the heatmap is the last convolution's alone.
        taps = [backbone.get_layer(spec.feature_layer).output]
        taps += [backbone.get_layer(name).output for name in spec.pooled_layers]
        self._conv = keras.Model(backbone.input, taps, name="gradcam_conv")
        self._pool = keras.Model(taps, backbone.output, name="gradcam_pool")
        # The head is the chain of layers after its input (dropout, optional dense, softmax): after the
        # backbone, or after the concatenation of every scale's features.
        head_input = model.get_layer("features") if spec.is_multiscale else backbone
        self._head = model.layers[model.layers.index(head_input) + 1 :]
        # A multi-scale model: the backbone sees each scale through that scale's resize layer.
        size = int(model.input_shape[1])
        self._views = [
            (None if scale == size else model.get_layer(f"resize_{scale}"), mirrored)
            for scale in (spec.scales or [size])
            for mirrored in ((False, True) if spec.mirror else (False,))
        ]
        self._mirror = spec.mirror

    def heatmaps(self, images: np.ndarray, class_index: int | np.ndarray | None = None) -> np.ndarray:
        """``images`` float32 (n, H, W, 3) in [0, 255] -> heatmaps (n, H, W) in [0, 1].

        ``class_index`` is the class to explain per image (default: the predicted class).
        """
        import tensorflow as tf

        images = np.asarray(images, dtype=np.float32)
        step = model_batch_size(self._model, len(images), GRADIENT_PIXEL_BUDGET)
        if len(images) > step:  # each image's heatmap is its own: a few at a time bounds the memory
            targets = None if class_index is None else np.broadcast_to(np.asarray(class_index), (len(images),))
            return np.concatenate(
                [
                    self.heatmaps(images[part], None if targets is None else targets[part])
                    for part in batch_slices(len(images), step)
                ]
            )
        x = tf.convert_to_tensor(images)
        if self._members:
            return self._ensemble_heatmaps(x, class_index)
        normalized = self._normalize(x)
        taps = []
        for resize, mirrored in self._views:
            view = normalized if resize is None else resize(normalized)
            outputs = self._conv(tf.reverse(view, axis=[2]) if mirrored else view, training=False)
            taps.append(outputs if isinstance(outputs, list | tuple) else [outputs])  # Keras unwraps one output
        convs = [view_taps[0] for view_taps in taps]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for conv in convs:
                tape.watch(conv)
            pooled = [self._pool(list(view_taps), training=False) for view_taps in taps]
            if self._mirror:  # each scale's features: the average over the image and its mirror image
                pooled = [(pooled[i] + pooled[i + 1]) / 2 for i in range(0, len(pooled), 2)]
            out = pooled[0] if len(pooled) == 1 else tf.concat(pooled, axis=-1)
            for layer in self._head:
                out = layer(out, training=False)
            if class_index is None:
                target = tf.argmax(out, axis=1)
            else:
                target = tf.broadcast_to(tf.constant(class_index, dtype=tf.int64), [tf.shape(out)[0]])
            score = tf.gather(out, target, axis=1, batch_dims=1)
        size = x.shape[1:3]
        total = tf.zeros(tf.shape(x)[:3])
        # Each scale's map where that scale's features moved the score, brought to the image's size and
        # averaged: one heatmap for what the model as a whole looked at.
        for (_, mirrored), conv, grads in zip(self._views, convs, tape.gradient(score, convs), strict=True):
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1))
            if mirrored:  # back to the image's own orientation
                cam = tf.reverse(cam, axis=[2])
            cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8)
            total += tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
        total = total / (tf.reduce_max(total, axis=(1, 2), keepdims=True) + 1e-8)
        return np.clip(total.numpy(), 0.0, 1.0)

    def _ensemble_heatmaps(self, x: Any, class_index: int | np.ndarray | None) -> np.ndarray:
        import tensorflow as tf

        if class_index is None:  # explain what the ensemble predicts, not what each member would
            class_index = tf.argmax(self._model(x, training=False), axis=1).numpy()
        size = x.shape[1:3]
        total = tf.zeros(tf.shape(x)[:3])
        for member, member_size in self._members:
            # The same antialiased resize the ensemble's Resizing layer applies in front of this member.
            heat = member.heatmaps(_resized(x, member_size).numpy(), class_index)
            total += tf.image.resize(heat[..., None], size, method="bilinear")[..., 0]
        total = total / (tf.reduce_max(total, axis=(1, 2), keepdims=True) + 1e-8)
        return np.clip(total.numpy(), 0.0, 1.0)


def _resized(x: Any, size: int) -> Any:
    import tensorflow as tf

    if tuple(x.shape[1:3]) == (size, size):
        return x
    return tf.image.resize(x, (size, size), method="bilinear", antialias=True)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap (H, W in [0, 1]) over an RGB uint8 image with matplotlib's 'jet' colours."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)

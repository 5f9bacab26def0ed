"""Grad-CAM on radpipe models: shapes, ranges, and that it explains the class it is asked about."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radpipe.components.prepare_base.prepare_base import prepare_base
from radpipe.config import ModelConfig
from radpipe.gradcam import GradCam, overlay
from radpipe.modelspec import load_model_dir

from conftest import SHARED_WEIGHTS, needs_shared


@needs_shared(SHARED_WEIGHTS)
def test_heatmaps_follow_the_object_and_the_class(tmp_path: Path) -> None:
    prepare_base(ModelConfig(weights=str(SHARED_WEIGHTS), image_size=96), ["a", "b"], tmp_path / "m", tmp_path)
    model, spec = load_model_dir(tmp_path / "m")
    images = np.zeros((2, 96, 96, 3), np.float32)
    images[0, 10:40, 10:40] = 255.0  # a bright square top-left
    images[1, 56:86, 56:86] = 255.0  # and bottom-right
    cam = GradCam(model, spec)
    maps = cam.heatmaps(images)
    assert maps.shape == (2, 96, 96) and maps.min() >= 0.0 and maps.max() <= 1.0
    for heatmap in maps:
        assert heatmap.std() > 0.01  # not flat
    other = cam.heatmaps(images, class_index=1 - np.argmax(model.predict_on_batch(images[:1])[0]))
    assert other.shape == maps.shape


def test_works_on_a_random_model_and_overlay_is_an_image(tmp_path: Path) -> None:
    prepare_base(
        ModelConfig(weights="none", image_size=32, scales=[1.0], dense_units=8),
        ["a", "b", "c"],
        tmp_path / "m",
        tmp_path,
    )
    model, spec = load_model_dir(tmp_path / "m")
    maps = GradCam(model, spec).heatmaps(np.full((3, 32, 32, 3), 128, np.float32), class_index=2)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
    blended = overlay(np.zeros((32, 32, 3), np.uint8), np.linspace(0, 1, 32 * 32).reshape(32, 32))
    assert blended.dtype == np.uint8 and blended.shape == (32, 32, 3) and blended.max() > 0


def test_a_multiscale_model_is_explained_at_every_scale(tmp_path: Path) -> None:
    prepare_base(ModelConfig(weights="none", image_size=64, scales=[0.5, 1.0]), ["a", "b"], tmp_path / "m", tmp_path)
    model, spec = load_model_dir(tmp_path / "m")
    assert spec.scales == [32, 64] and spec.mirror
    cam = GradCam(model, spec)
    views = [(view.name if view else None, mirrored) for view, mirrored in cam._views]
    assert views == [("resize_32", False), ("resize_32", True), (None, False), (None, True)]
    maps = cam.heatmaps(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32))
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and maps.max() <= 1.0


def test_a_model_without_feature_layer_is_refused(tmp_path: Path) -> None:
    prepare_base(ModelConfig(weights="none", image_size=32, scales=[1.0]), ["a", "b"], tmp_path / "m", tmp_path)
    model, spec = load_model_dir(tmp_path / "m")
    with pytest.raises(ValueError, match="names no feature layer"):
        GradCam(model, spec.__class__(**{**spec.__dict__, "feature_layer": ""}))


def test_heatmaps_equal_a_gradient_taken_through_the_whole_backbone(tmp_path: Path) -> None:
    """The backbone runs outside the tape and only its pooling inside: the heatmaps must equal Grad-CAM with
    the tape around everything (the textbook way, which kept every activation alive)."""
    import keras
    import tensorflow as tf

    prepare_base(
        ModelConfig(weights="none", image_size=64, scales=[0.5, 1.0]), ["a", "b", "c"], tmp_path / "m", tmp_path
    )
    model, spec = load_model_dir(tmp_path / "m")
    images = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    cam = GradCam(model, spec)
    backbone = model.get_layer(spec.backbone_layer)
    both = keras.Model(backbone.input, [backbone.get_layer(spec.feature_layer).output, backbone.output])
    with tf.GradientTape() as tape:
        normalized = model.get_layer("normalize")(tf.constant(images))
        convs, pooled = [], []
        for resize, mirrored in cam._views:
            view = normalized if resize is None else resize(normalized)
            conv, features = both(tf.reverse(view, axis=[2]) if mirrored else view, training=False)
            convs.append(conv)
            pooled.append(features)
        out = tf.concat([(pooled[i] + pooled[i + 1]) / 2 for i in range(0, len(pooled), 2)], axis=-1)
        for layer in cam._head:
            out = layer(out, training=False)
        score = tf.gather(out, tf.constant([2, 0, 1], tf.int64), axis=1, batch_dims=1)
    total = tf.zeros((3, 64, 64))
    for (_, mirrored), conv, grads in zip(cam._views, convs, tape.gradient(score, convs), strict=True):
        one = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * conv, axis=-1))
        one = tf.reverse(one, axis=[2]) if mirrored else one
        one = one / (tf.reduce_max(one, axis=(1, 2), keepdims=True) + 1e-8)
        total += tf.image.resize(one[..., None], (64, 64), method="bilinear")[..., 0]
    expected = np.clip((total / (tf.reduce_max(total, axis=(1, 2), keepdims=True) + 1e-8)).numpy(), 0, 1)
    got = cam.heatmaps(images, class_index=np.array([2, 0, 1]))
    assert expected.std() > 0.01 and np.allclose(got, expected, atol=1e-5)


def test_many_images_are_explained_a_few_at_a_time_with_the_same_heatmaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import radpipe.gradcam

    prepare_base(ModelConfig(weights="none", image_size=64, scales=[1.0]), ["a", "b"], tmp_path / "m", tmp_path)
    model, spec = load_model_dir(tmp_path / "m")
    images = np.random.default_rng(2).uniform(0, 255, (5, 64, 64, 3)).astype(np.float32)
    cam = GradCam(model, spec)
    targets = np.array([0, 1, 1, 0, 1])
    whole = cam.heatmaps(images, class_index=targets)
    asked: list[int] = []

    def one_image_a_call(model_: object, requested: int, budget: int) -> int:  # as for a very large input
        asked.append(requested)
        return 1

    monkeypatch.setattr(radpipe.gradcam, "model_batch_size", one_image_a_call)
    parts = cam.heatmaps(images, class_index=targets)
    assert asked == [5, 1, 1, 1, 1, 1]  # the whole, then each image alone
    assert np.allclose(parts, whole, atol=1e-5)

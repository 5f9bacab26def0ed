"""prepare-base: backbones, where weights come from, and never a silent fall-back to random weights."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import logging
import threading
from pathlib import Path

import boto3
import numpy as np
import pytest

from radpipe import storage
from radpipe.components.prepare_base import backbones
from radpipe.components.prepare_base.prepare_base import build_classifier, prepare_base
from radpipe.config import ModelConfig
from radpipe.errors import WeightsError
from radpipe.modelspec import load_model_dir

from conftest import SHARED_WEIGHTS, needs_shared

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def mobilenet_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A no-top MobileNetV2 weights file made here (seeded random values: recognisable, not ImageNet)."""
    import keras

    keras.utils.set_random_seed(123)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path_factory.mktemp("weights") / "mnv2.weights.h5"
    model.save_weights(path)
    return path


def first_conv_kernel(model_dir: Path) -> np.ndarray:
    model, spec = load_model_dir(model_dir)
    return model.get_layer(spec.backbone_layer).get_layer("Conv1").get_weights()[0]


def test_random_weights_only_when_explicit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        spec = prepare_base(
            ModelConfig(weights="none", image_size=32, scales=[1.0]), CLASSES, tmp_path / "m", tmp_path / "w"
        )
    assert any(r.levelno == logging.WARNING and "RANDOM weights" in r.getMessage() for r in caplog.records)
    model, loaded = load_model_dir(tmp_path / "m")
    assert loaded == spec and loaded.class_names == CLASSES and loaded.weights == "none"
    assert model.output_shape == (None, 3) and model.input_shape == (None, 32, 32, 3)
    assert loaded.preprocessing.image_size == 32 and loaded.feature_layer == "out_relu"


def test_weights_from_a_file_are_really_loaded(tmp_path: Path, mobilenet_weights_file: Path) -> None:
    import keras

    prepare_base(
        ModelConfig(weights=str(mobilenet_weights_file), image_size=32, scales=[1.0]),
        CLASSES,
        tmp_path / "m",
        tmp_path / "w",
    )
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference.load_weights(mobilenet_weights_file)
    np.testing.assert_array_equal(first_conv_kernel(tmp_path / "m"), reference.get_layer("Conv1").get_weights()[0])


def test_weights_from_s3_and_https(tmp_path: Path, mobilenet_weights_file: Path, s3_server: str) -> None:
    boto3.client("s3").create_bucket(Bucket="weights")
    storage.upload(mobilenet_weights_file, "s3://weights/mnv2.weights.h5")
    prepare_base(
        ModelConfig(weights="s3://weights/mnv2.weights.h5", image_size=32, scales=[1.0]),
        CLASSES,
        tmp_path / "s3",
        tmp_path / "w1",
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mobilenet_weights_file.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{mobilenet_weights_file.name}"
        prepare_base(ModelConfig(weights=url, image_size=32, scales=[1.0]), CLASSES, tmp_path / "http", tmp_path / "w2")
    finally:
        server.shutdown()
    np.testing.assert_array_equal(first_conv_kernel(tmp_path / "s3"), first_conv_kernel(tmp_path / "http"))


def test_missing_imagenet_weights_fail_with_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    # A loopback port nothing listens on: the download fails at once and nothing leaves this machine.
    offline = dataclasses.replace(backbones.BACKBONES["mobilenet_v2"], weights_url="http://127.0.0.1:9/w.h5")
    monkeypatch.setitem(backbones.BACKBONES, "mobilenet_v2", offline)
    with pytest.raises(WeightsError) as info:
        prepare_base(ModelConfig(image_size=32, scales=[1.0]), CLASSES, tmp_path / "m", tmp_path / "w")
    message = str(info.value)
    assert "are not in the Keras cache" in message and "--weights PATH_OR_URI" in message
    assert "model.weights=none" in message
    assert not (tmp_path / "m").exists()


def test_garbage_weights_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="cannot load"):
        prepare_base(
            ModelConfig(weights=str(bad), image_size=32, scales=[1.0]), CLASSES, tmp_path / "m", tmp_path / "w"
        )
    with pytest.raises(WeightsError, match="is not a file"):
        prepare_base(
            ModelConfig(weights=str(tmp_path), image_size=32, scales=[1.0]), CLASSES, tmp_path / "m", tmp_path / "w"
        )


@needs_shared(SHARED_WEIGHTS)
def test_imagenet_from_the_keras_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / SHARED_WEIGHTS.name).symlink_to(SHARED_WEIGHTS)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    spec = prepare_base(ModelConfig(image_size=96), CLASSES, tmp_path / "m", tmp_path / "w")
    assert spec.weights == "imagenet" and spec.extra["weights_sha256"].startswith("71e4c4ec")
    # Trained BatchNorm statistics are not the initial zeros: these really are ImageNet weights.
    model, _ = load_model_dir(tmp_path / "m")
    moving_mean = model.get_layer("backbone").get_layer("bn_Conv1").moving_mean
    assert float(np.abs(np.asarray(moving_mean)).max()) > 0.01


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "efficientnet_b0"])
def test_other_backbones_build(name: str) -> None:
    model = build_classifier(ModelConfig(backbone=name, weights="none", image_size=32, scales=[1.0]), 2, None)
    assert model.output_shape == (None, 2)
    backbone = backbones.BACKBONES[name]
    inner = model.get_layer("backbone")
    channels = [
        int(inner.get_layer(layer).output.shape[-1]) for layer in (backbone.feature_layer, backbone.intermediate_layer)
    ]
    assert inner.output.shape[-1] == sum(channels)  # the last layer pooled, then the intermediate one


def test_intermediate_features_are_the_pooled_earlier_activation_after_the_last(tmp_path: Path) -> None:
    """The backbone's output is [pooled last layer, pooled intermediate layer]; off, the last alone."""
    import keras

    spec = prepare_base(ModelConfig(weights="none", image_size=64, scales=[1.0]), ["a", "b"], tmp_path / "m", tmp_path)
    model, loaded = load_model_dir(tmp_path / "m")
    assert spec.pooled_layers == loaded.pooled_layers == ["block_13_expand_relu"]
    inner = model.get_layer("backbone")
    taps = keras.Model(inner.input, [inner.get_layer(name).output for name in ("out_relu", "block_13_expand_relu")])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    last, middle = (np.asarray(t).mean(axis=(1, 2)) for t in taps(x, training=False))
    np.testing.assert_allclose(np.asarray(inner(x, training=False)), np.concatenate([last, middle], 1), atol=1e-5)
    off = ModelConfig(weights="none", image_size=64, scales=[1.0], intermediate_features=False)
    spec = prepare_base(off, ["a", "b"], tmp_path / "plain", tmp_path)
    plain, _ = load_model_dir(tmp_path / "plain")
    assert spec.pooled_layers == [] and plain.get_layer("backbone").output.shape[-1] == 1280


def test_caffe_normalisation_matches_keras_preprocess_input() -> None:
    import keras

    layer = backbones.normalization_layer(backbones.BACKBONES["vgg16"])
    image = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(image.copy())
    np.testing.assert_allclose(np.asarray(layer(image)), expected, atol=1e-3)
    mobilenet = backbones.normalization_layer(backbones.BACKBONES["mobilenet_v2"])
    np.testing.assert_allclose(
        np.asarray(mobilenet(image)), keras.applications.mobilenet_v2.preprocess_input(image.copy()), atol=1e-5
    )

"""Temperature scaling: the fit recovers a known temperature, and baking it into a model is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radpipe.components.evaluate_and_register import temperature
from radpipe.components.prepare_base.prepare_base import prepare_base
from radpipe.config import ModelConfig
from radpipe.modelspec import load_model_dir


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_fit_sharpens_under_confident_probabilities_and_lowers_the_loss() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])  # softmax(logits) is calibrated
    under_confident = softmax(logits / 3)  # what label smoothing does, roughly
    found = temperature.fit([under_confident], labels)
    assert 0.28 < found.value < 0.4  # ~1/3 undoes it
    assert found.val_loss_after < found.val_loss_before
    np.testing.assert_array_equal(
        temperature.scaled([under_confident], found.value).argmax(1), under_confident.argmax(1)
    )


def test_baked_into_the_last_layer_it_is_exactly_dividing_the_logits(tmp_path: Path) -> None:
    prepare_base(
        ModelConfig(weights="none", image_size=32, scales=[1.0], dropout=0.0), ["a", "b", "c"], tmp_path / "m", tmp_path
    )
    model, spec = load_model_dir(tmp_path / "m")
    x = np.random.default_rng(1).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    before = np.asarray(model.predict_on_batch(x))
    temperature.apply(model, spec, 0.5)
    np.testing.assert_allclose(model.predict_on_batch(x), temperature.scaled([before], 0.5), atol=1e-5)


def test_too_few_validation_images_leave_the_model_as_it_is_and_say_why(tmp_path: Path) -> None:
    prepare_base(ModelConfig(weights="none", image_size=32, scales=[1.0]), ["a", "b"], tmp_path / "m", tmp_path)
    model, spec = load_model_dir(tmp_path / "m")
    x = np.zeros((4, 32, 32, 3), np.float32)
    before = np.asarray(model.predict_on_batch(x))
    spec = temperature.calibrate(model, spec, x, np.array([0, 1, 0, 1]), batch_size=2)
    assert "fewer than the 30" in spec.extra["temperature"]["skipped"]
    np.testing.assert_array_equal(model.predict_on_batch(x), before)

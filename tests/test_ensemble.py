"""An ensemble of candidates as one radpipe model: what it predicts, that it saves, loads, serves and explains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radpipe.classifier import Classifier
from radpipe.components.evaluate_and_register import ensemble
from radpipe.components.evaluate_and_register.evaluate import load_candidate, read_candidates
from radpipe.components.prepare_base.prepare_base import prepare_base
from radpipe.config import ModelConfig
from radpipe.errors import RadpipeError
from radpipe.gradcam import GradCam
from radpipe.modelspec import load_model_dir, read_spec, save_model_dir

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two random-weight candidates of different input sizes, as prepare-base writes them."""
    root = tmp_path_factory.mktemp("members")
    dirs = []
    for name, size, dense in (("small", 32, 0), ("large", 40, 8)):
        prepare_base(
            ModelConfig(weights="none", image_size=size, scales=[1.0], dense_units=dense), CLASSES, root / name, root
        )
        spec = read_spec(root / name).with_extra(candidate=name, val_metrics={"val_accuracy": 0.5})
        model, _ = load_model_dir(root / name)
        save_model_dir(model, spec, root / f"{name}-candidate")
        dirs.append(root / f"{name}-candidate")
    return dirs


def images(size: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_the_ensemble_is_the_mean_of_its_members_on_their_own_input_sizes(members: list[Path], tmp_path: Path) -> None:
    import tensorflow as tf

    candidates = read_candidates([str(d) for d in members])
    models = [load_candidate(c) for c in candidates]
    model = ensemble.build_model(models, [32, 40])
    spec = ensemble.build_spec(candidates, {"val_accuracy": 0.75})
    assert spec.preprocessing.image_size == 40 and spec.is_ensemble
    assert [m.extra["layer"] for m in spec.members] == ["member_0", "member_1"]
    assert spec.extra["candidate"] == "ensemble(small+large)"

    x = images(40)
    small = models[0].predict_on_batch(tf.image.resize(x, (32, 32), method="bilinear", antialias=True).numpy())
    expected = (np.asarray(small) + np.asarray(models[1].predict_on_batch(x))) / 2
    np.testing.assert_allclose(model.predict_on_batch(x), expected, atol=1e-5)

    # Saved as a radpipe model folder, it loads back with its record and predicts the same.
    save_model_dir(model, spec, tmp_path / "ensemble")
    classifier = Classifier.load(str(tmp_path / "ensemble"))
    assert classifier.image_size == 40 and [m.extra["candidate"] for m in classifier.spec.members] == ["small", "large"]
    np.testing.assert_allclose(classifier.predict_arrays(x), expected, atol=1e-5)


def test_grad_cam_explains_an_ensemble_at_its_input_size(members: list[Path]) -> None:
    candidates = read_candidates([str(d) for d in members])
    model = ensemble.build_model([load_candidate(c) for c in candidates], [32, 40])
    cam = GradCam(model, ensemble.build_spec(candidates, {}))
    maps = cam.heatmaps(images(40, 3), class_index=np.array([0, 1, 2]))
    assert maps.shape == (3, 40, 40) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert cam.heatmaps(images(40, 2)).shape == (2, 40, 40)  # the ensemble's own prediction is explained


def test_candidates_of_different_data_sets_are_not_averaged(members: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    prepare_base(ModelConfig(weights="none", image_size=32, scales=[1.0]), ["x", "y"], other, tmp_path)
    candidates = read_candidates([str(members[0]), str(other)])
    with pytest.raises(RadpipeError, match="different classes"):
        ensemble.build_spec(candidates, {})


def test_candidates_that_window_dicom_differently_are_not_averaged(members: list[Path], tmp_path: Path) -> None:
    bone = tmp_path / "bone"
    prepare_base(ModelConfig(weights="none", image_size=32, scales=[1.0], window="bone"), CLASSES, bone, tmp_path)
    same = read_candidates([str(d) for d in members])
    assert ensemble.input_preprocessing(same).windows == same[0].spec.preprocessing.windows  # both lung
    candidates = read_candidates([str(members[0]), str(bone)])
    assert ensemble.input_preprocessing(candidates) is None
    with pytest.raises(RadpipeError, match=r"window DICOM \(model.window\), frame images"):
        ensemble.build_spec(candidates, {})


def test_candidates_that_frame_images_differently_are_not_averaged(members: list[Path], tmp_path: Path) -> None:
    stretched = tmp_path / "stretched"
    config = ModelConfig(weights="none", image_size=32, scales=[1.0], framing="stretch")
    prepare_base(config, CLASSES, stretched, tmp_path)
    same = read_candidates([str(d) for d in members])
    assert ensemble.input_preprocessing(same).framing == same[0].spec.preprocessing.framing == "trim-pad"
    assert ensemble.input_preprocessing(read_candidates([str(members[0]), str(stretched)])) is None


def test_candidates_that_adjust_grey_levels_differently_are_not_averaged(members: list[Path], tmp_path: Path) -> None:
    as_exported = tmp_path / "as-exported"
    prepare_base(
        ModelConfig(weights="none", image_size=32, scales=[1.0], intensity="none"), CLASSES, as_exported, tmp_path
    )
    same = read_candidates([str(d) for d in members])
    assert ensemble.input_preprocessing(same).intensity == "autocontrast"
    assert ensemble.input_preprocessing(same).image_size == 40  # the largest member's
    assert ensemble.input_preprocessing(read_candidates([str(members[0]), str(as_exported)])) is None


def test_a_temperature_scales_every_member_of_an_ensemble(members: list[Path]) -> None:
    from radpipe.components.evaluate_and_register import temperature

    candidates = read_candidates([str(d) for d in members])
    model = ensemble.build_model([load_candidate(c) for c in candidates], [32, 40])
    spec = ensemble.build_spec(candidates, {})
    x = images(40, 5)
    per_member = temperature.member_probabilities(model, spec, x, batch_size=2)
    assert len(per_member) == 2 and per_member[0].shape == (5, 3)
    np.testing.assert_allclose(np.mean(per_member, axis=0), model.predict_on_batch(x), atol=1e-5)
    temperature.apply(model, spec, 2.0)
    np.testing.assert_allclose(model.predict_on_batch(x), temperature.scaled(per_member, 2.0), atol=1e-5)

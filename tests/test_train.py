"""train: phases, best-epoch restore, class weights, what is recorded with the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from radpipe.components.prepare_base.prepare_base import prepare_base
from radpipe.components.train.train import class_weights, grouped_cv_losses, set_trainable, train_model
from radpipe.config import AugmentationConfig, ModelConfig, TrainConfig
from radpipe.dataset import Split, load_split, read_manifest
from radpipe.errors import DataError
from radpipe.modelspec import REFIT_HEAD_FILE, load_model_dir

from conftest import AS_EXPORTED

NO_AUGMENTATION = AugmentationConfig(flip=False, rotation=0, zoom=0, translation=0, contrast=0)
"""No transforms, so no augmented copies either (``augmented_copies=0`` beside it)."""
NO_FINE_TUNING = {"fine_tune_layers": 0, "fine_tune_epochs": 0}


@pytest.fixture(scope="module")
def base_dir(ingested_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    prepare_base(
        ModelConfig(weights="none", image_size=32, scales=[1.0], intensity=AS_EXPORTED),
        read_manifest(ingested_tiny)["classes"],
        root / "m",
        root,
    )
    return root / "m"


def test_two_phases_record_every_epoch_and_restore_the_best(
    base_dir: Path, ingested_tiny: Path, tmp_path: Path
) -> None:
    seen: list[dict] = []
    config = TrainConfig(
        head="keras",
        epochs=2,
        learning_rate=1e-2,
        fine_tune_layers=12,
        fine_tune_epochs=3,
        fine_tune_learning_rate=1e-3,
        early_stopping_patience=0,
        augmentation=NO_AUGMENTATION,
        augmented_copies=0,
    )
    result = train_model(base_dir, ingested_tiny, config, tmp_path / "out", on_epoch=seen.append, extra={"k": "v"})
    assert [r["phase"] for r in result.history] == ["head"] * 2 + ["fine-tune"] * 3
    assert seen == result.history and [r["epoch"] for r in seen] == [1, 2, 3, 4, 5]
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.best_epoch == best["epoch"]
    # The saved model is the best epoch's: its validation loss is that epoch's, not the last one's.
    assert result.val_metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-3, abs=1e-3)
    model, spec = load_model_dir(tmp_path / "out")
    assert spec.extra["best_epoch"] == result.best_epoch and spec.extra["k"] == "v"
    assert spec.extra["train_config"]["fine_tune_layers"] == 12
    assert spec.extra["history"] == result.history
    assert model.get_layer("backbone").trainable is False  # saved frozen: no augmentation wrapper either
    assert [layer.name for layer in model.layers][-1] == "probabilities"
    # A head that fine-tuning changed has no train + validation refit.
    assert "refit_head" not in spec.extra and not (tmp_path / "out" / REFIT_HEAD_FILE).exists()


def test_features_are_cached_and_reused(base_dir: Path, ingested_tiny: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        epochs=2,
        feature_cache=str(tmp_path / "cache"),
        augmentation=NO_AUGMENTATION,
        augmented_copies=0,
        **NO_FINE_TUNING,
    )
    first = train_model(base_dir, ingested_tiny, config, tmp_path / "a")
    second = train_model(base_dir, ingested_tiny, config, tmp_path / "b")
    assert first.spec.extra["features"]["cache_hit"] is False
    assert second.spec.extra["features"]["cache_hit"] is True
    assert first.spec.extra["features"]["key"] == second.spec.extra["features"]["key"]
    assert len(list((tmp_path / "cache").glob("features-*.npz"))) == 1
    # Same data, config and seed: the same model, whether features were computed or read.
    assert first.val_metrics == pytest.approx(second.val_metrics, abs=1e-6)


def test_frozen_phase_end_to_end_when_asked(base_dir: Path, ingested_tiny: Path, tmp_path: Path) -> None:
    config = TrainConfig(head="keras", epochs=2, head_on_features=False, **NO_FINE_TUNING)
    result = train_model(base_dir, ingested_tiny, config, tmp_path / "out")
    assert [r["phase"] for r in result.history] == ["frozen"] * 2
    assert "features" not in result.spec.extra


def test_early_stopping(base_dir: Path, ingested_tiny: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        head="keras",
        epochs=30,
        learning_rate=1e-6,
        early_stopping_patience=2,
        augmentation=NO_AUGMENTATION,
        augmented_copies=0,
        **NO_FINE_TUNING,
    )
    result = train_model(base_dir, ingested_tiny, config, tmp_path / "out")
    assert len(result.history) < 30


@pytest.mark.parametrize(("classes", "selection"), [(2, "validation"), (3, "validation"), (3, "grouped-cv")])
def test_logistic_head_is_the_regression_chosen_folded_into_the_model(
    classes: int, selection: str, tmp_path: Path
) -> None:
    """The saved model computes the chosen regression's probabilities; chosen on validation, whatever the seed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from radpipe.components.ingest.ingest import ingest
    from radpipe.components.train.features import feature_extractor
    from radpipe.config import DataConfig

    from conftest import make_tree

    names = ["cats", "dogs", "owls"][:classes]
    values = {"cats": 60, "dogs": 190, "owls": 125}
    make_tree(tmp_path / "src", {n: 14 for n in names}, value_of=lambda folder: values[folder])
    ingest(DataConfig(uri=str(tmp_path / "src")), tmp_path / "ds", tmp_path / "w")
    model_config = ModelConfig(weights="none", image_size=64, scales=[0.5, 1.0], intensity=AS_EXPORTED)
    spec = prepare_base(model_config, names, tmp_path / "base", tmp_path)
    assert spec.scales == [32, 64]
    config = TrainConfig(
        head_c=[0.01, 1.0], head_selection=selection, head_cv_folds=3, augmented_copies=0, **NO_FINE_TUNING
    )
    results = [
        train_model(tmp_path / "base", tmp_path / "ds", config.replace(seed=seed), tmp_path / f"out{seed}")
        for seed in (1, 2)
    ]
    tried = results[0].spec.extra["logistic_head"]
    assert [r["c"] for r in tried] == [0.01, 1.0]
    judge = "cv_loss" if selection == "grouped-cv" else "val_loss"
    assert all(judge in r for r in tried) and (selection == "grouped-cv") == ("cv_loss" in tried[0])
    kept = min(tried, key=lambda r: r[judge])
    assert results[0].val_metrics["val_loss"] == pytest.approx(kept["val_loss"], rel=1e-4, abs=1e-5)
    assert (
        "lowest " + ("grouped cross-validation" if judge == "cv_loss" else "validation")
        in (results[0].spec.extra["phase_ends"][0])
    )
    if selection == "validation":
        assert results[0].val_metrics == results[1].val_metrics  # no seed moves it

    model, spec = load_model_dir(tmp_path / "out1")
    train = load_split(tmp_path / "ds", "train", spec.preprocessing, spec.class_names)
    val = load_split(tmp_path / "ds", "val", spec.preprocessing, spec.class_names)
    extractor = feature_extractor(model, spec)
    x_train, x_val = (extractor.predict(s.images.astype(np.float32), verbose=0) for s in (train, val))
    scaler = StandardScaler().fit(x_train)
    regression = LogisticRegression(C=kept["c"], max_iter=5000, class_weight="balanced")
    expected = regression.fit(scaler.transform(x_train), train.labels).predict_proba(scaler.transform(x_val))
    np.testing.assert_allclose(model.predict(val.images.astype(np.float32), verbose=0), expected, atol=1e-4)

    # The same C fitted again on train + validation, for evaluate-and-register to register (evaluate.refit).
    assert spec.extra["refit_head"] == {
        "file": REFIT_HEAD_FILE,
        "c": kept["c"],
        "images": {"train": len(train), "val": len(val)},
        "augmented_copies": 0,
    }
    refit = np.load(tmp_path / "out1" / REFIT_HEAD_FILE)
    model.get_layer("probabilities").set_weights([refit["kernel"], refit["bias"]])
    pooled = np.concatenate([x_train, x_val])
    scaler = StandardScaler().fit(pooled)
    regression = LogisticRegression(C=kept["c"], max_iter=5000, class_weight="balanced")
    regression.fit(scaler.transform(pooled), np.concatenate([train.labels, val.labels]))
    expected = regression.predict_proba(scaler.transform(x_val))
    np.testing.assert_allclose(model.predict(val.images.astype(np.float32), verbose=0), expected, atol=1e-4)


def test_augmented_copies_join_every_fit_of_the_logistic_head(tmp_path: Path) -> None:
    """The head is the regression on train and its augmented copies; the refit adds validation and its copies;
    copies are random transforms (not the images again), the same for the same seed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from radpipe.components.ingest.ingest import ingest
    from radpipe.components.train.features import feature_extractor
    from radpipe.config import DataConfig

    from conftest import make_tree

    make_tree(tmp_path / "src", {"cats": 14, "dogs": 14}, value_of=lambda folder: {"cats": 60, "dogs": 190}[folder])
    ingest(DataConfig(uri=str(tmp_path / "src")), tmp_path / "ds", tmp_path / "w")
    prepare_base(
        ModelConfig(weights="none", image_size=32, scales=[1.0], intensity=AS_EXPORTED),
        ["cats", "dogs"],
        tmp_path / "base",
        tmp_path,
    )
    config = TrainConfig(head_c=[0.1], head_selection="validation", augmented_copies=2, **NO_FINE_TUNING)
    for name in ("a", "b"):
        train_model(
            tmp_path / "base",
            tmp_path / "ds",
            config.replace(feature_cache=str(tmp_path / f"cache-{name}")),
            tmp_path / name,
        )
    cached = {name: np.load(next((tmp_path / f"cache-{name}").glob("features-*.npz"))) for name in ("a", "b")}
    copies = {split: cached["a"][f"{split}_copies"] for split in ("train", "val")}
    originals = {split: cached["a"][f"{split}_features"] for split in ("train", "val")}
    assert copies["train"].shape == (2, *originals["train"].shape)

    def differ(a: np.ndarray, b: np.ndarray) -> float:  # a random backbone's features are tiny: relative
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    assert (
        differ(copies["train"][0], originals["train"]) > 0.01 and differ(copies["train"][0], copies["train"][1]) > 0.01
    )
    assert differ(cached["b"]["train_copies"], copies["train"]) < 1e-5  # the same seed, the same copies

    model, spec = load_model_dir(tmp_path / "a")
    assert spec.extra["features"]["augmented_copies"] == 2 and spec.extra["refit_head"]["augmented_copies"] == 2
    train = load_split(tmp_path / "ds", "train", spec.preprocessing, spec.class_names)
    val = load_split(tmp_path / "ds", "val", spec.preprocessing, spec.class_names)
    np.testing.assert_allclose(
        feature_extractor(model, spec).predict(train.images.astype(np.float32), verbose=0),
        originals["train"],
        atol=1e-4,
    )

    def expected(splits: list, x_val: np.ndarray) -> np.ndarray:
        x = np.concatenate([np.concatenate([originals[s.name], *copies[s.name]]) for s in splits])
        y = np.concatenate([np.tile(s.labels, 3) for s in splits])
        scaler = StandardScaler().fit(x)
        regression = LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced").fit(scaler.transform(x), y)
        return regression.predict_proba(scaler.transform(x_val))

    predicted = model.predict(val.images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(predicted, expected([train], originals["val"]), atol=1e-4)
    refit = np.load(tmp_path / "a" / REFIT_HEAD_FILE)
    model.get_layer("probabilities").set_weights([refit["kernel"], refit["bias"]])
    predicted = model.predict(val.images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(predicted, expected([train, val], originals["val"]), atol=1e-4)


def test_grouped_cv_never_scores_an_image_on_a_fit_that_saw_its_group() -> None:
    """Groups of identical images with labels drawn at random per group: folds that split a group would let
    a weakly regularised fit recognise the held-out copies (loss near 0); grouped folds cannot (chance)."""
    rng = np.random.default_rng(0)
    groups = np.repeat([f"scan{i}" for i in range(40)], 4)
    x = np.repeat(rng.normal(size=(40, 64)), 4, axis=0)
    labels = np.repeat(rng.permutation([0, 1] * 20), 4)
    split = Split("train", np.zeros((160, 1, 1, 3), np.uint8), labels, [], ["a", "b"], list(groups))
    loss = grouped_cv_losses(x, split, [100.0], None, 5, seed=0)[100.0]
    assert loss > 0.6  # log(2) = 0.69 is chance; an ungrouped split scores about 0
    ungrouped = dataclasses.replace(split, groups=[str(i) for i in range(160)])
    assert grouped_cv_losses(x, ungrouped, [100.0], None, 5, seed=0)[100.0] < 0.1
    with pytest.raises(DataError, match="head_selection to 'validation'"):
        grouped_cv_losses(x, dataclasses.replace(split, groups=["one"] * 160), [1.0], None, 5, seed=0)
    # Augmented copies (here: exact ones) join a fold's fit for its own images only: still chance.
    copies = np.stack([x, x])
    assert grouped_cv_losses(x, split, [100.0], None, 5, seed=0, copies=copies)[100.0] > 0.6


def test_fine_tune_unfreezes_only_the_top_layers(base_dir: Path) -> None:
    model, spec = load_model_dir(base_dir)
    backbone = model.get_layer("backbone")
    set_trainable(model, spec, 10)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable and all(name in {lyr.name for lyr in backbone.layers[-10:]} for name in trainable)
    assert set_trainable(model, spec, 0) == 0 and not backbone.trainable


def test_class_weights_are_balanced() -> None:
    split = Split("train", np.zeros((4, 2, 2, 3), np.uint8), np.array([0, 0, 0, 1]), [], ["a", "b"])
    weights = class_weights(split)
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


def test_load_split_decodes_as_the_model_sees_it(ingested_tiny: Path, base_dir: Path) -> None:
    _, spec = load_model_dir(base_dir)
    split = load_split(ingested_tiny, "train", spec.preprocessing)
    assert split.images.shape[1:] == (32, 32, 3) and split.images.dtype == np.uint8
    assert sorted(set(split.labels.tolist())) == [0, 1]


def test_no_validation_images_is_an_error(base_dir: Path, ingested_tiny: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(ingested_tiny, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["split"] != "val"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="no validation images"):
        train_model(base_dir, copy, TrainConfig(epochs=1, **NO_FINE_TUNING), tmp_path / "out")

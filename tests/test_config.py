"""The config model: defaults, YAML + --set overrides, and clear errors for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from radpipe.config import Config, TrainConfig, load_config, parse_override, resolve_candidate
from radpipe.errors import ConfigError


def test_defaults_validate_and_round_trip() -> None:
    config = load_config()
    assert config == Config()
    assert Config.from_dict(config.to_dict()) == config
    assert config.model.backbone == "mobilenet_v2" and config.model.weights == "imagenet"


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  augmentation: {flip: false}\nmodel: {image_size: 128}\n")
    config = load_config(path, ["train.epochs=5", "data.uri=s3://b/p", "train.augmentation.zoom=0.2"])
    assert config.train.epochs == 5
    assert config.train.augmentation.flip is False and config.train.augmentation.zoom == 0.2
    assert config.model.image_size == 128
    assert config.data.uri == "s3://b/p"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=5", "config key 'train.epoch': unknown key; did you mean 'epochs'?"),
        ("trian.epochs=5", "config key 'trian': unknown key; did you mean 'train'?"),
        ("train.epochs=five", "config key 'train.epochs': expected an integer, got 'five'"),
        ("train.epochs=0", "config key 'train.epochs': must be >= 1, got 0"),
        ("model.backbone=vgg19", "unknown backbone 'vgg19'; choose one of mobilenet_v2, vgg16, resnet50"),
        ("model.dropout=1.5", "config key 'model.dropout': must be in [0, 1)"),
        ("train.class_weights=maybe", "expected true or false, got 'maybe'"),
        ("train.fine_tune_epochs=5", "set fine_tune_layers and fine_tune_epochs together"),
        ("model.scales=[0.5, 1.5]", "config key 'model.scales[1]': must be in (0, 1]"),
        ("model.intensity=equalize", "config key 'model.intensity': must be one of none, autocontrast"),
        ("train.head=ridge", "must be 'logistic' or 'keras'"),
        ("data.val_fraction=0.9", "config key 'data.val_fraction': must be between 0 and 0.5"),
        ("register.model_name=a/b", "must not contain '@' or '/'"),
        ("epochs", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_augmented_copies_without_a_transform_say_what_to_do() -> None:
    off = [f"train.augmentation.{key}={value}" for key, value in (("flip", "false"), ("rotation", 0), ("zoom", 0))]
    off += ["train.augmentation.translation=0", "train.augmentation.contrast=0"]
    with pytest.raises(
        ConfigError, match=r"every one in train\.augmentation is off: turn one on, or set augmented_copies to 0"
    ):
        load_config(None, off)
    assert load_config(None, [*off, "train.augmented_copies=0"]).train.augmented_copies == 0
    assert load_config(None, off[1:]).train.augmentation.flip  # one transform is enough


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("train: {epochs: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_integral_floats_from_kfp_structs_are_integers() -> None:
    # KFP passes STRUCT parameters through protobuf: 10 arrives as 10.0.
    train = TrainConfig.from_dict({"epochs": 10.0, "batch_size": 16.0})
    assert train.epochs == 10 and isinstance(train.epochs, int)
    with pytest.raises(ConfigError, match="expected an integer"):
        TrainConfig.from_dict({"epochs": 10.5})


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 5e-5 as a string; learning rates are written that way.
    (tmp_path / "lr.yaml").write_text("train:\n  fine_tune_learning_rate: 5e-5\n")
    config = load_config(tmp_path / "lr.yaml", ["train.learning_rate=1E-3"])
    assert config.train.fine_tune_learning_rate == 5e-5 and config.train.learning_rate == 1e-3
    with pytest.raises(ConfigError, match=r"train\.learning_rate': expected a number, got 'e-3'"):
        load_config(None, ["train.learning_rate=e-3"])


def test_override_values_are_yaml() -> None:
    assert parse_override("search.candidates=[]") == (["search", "candidates"], [])
    assert parse_override("data.class_map={a_x: a}") == (["data", "class_map"], {"a_x": "a"})


def test_candidates_resolve_over_the_base_config() -> None:
    config = load_config(
        None,
        ["search.candidates=[{name: small, model: {image_size: 160}}, {train: {learning_rate: 0.01}}]"],
    )
    names = [c["name"] for c in config.candidate_list()]
    assert names == ["small", "candidate-1"]
    model, train = resolve_candidate(config.model, config.train, config.candidate_list()[0])
    assert model.image_size == 160 and train == config.train
    with pytest.raises(ConfigError, match=r"search.candidates\[0\].model.image_size"):
        load_config(None, ["search.candidates=[{model: {image_size: 8}}]"])
    with pytest.raises(ConfigError, match="candidate names must be unique"):
        load_config(None, ["search.candidates=[{name: a}, {name: a}]"])


def test_no_candidates_means_the_base_config_once() -> None:
    assert Config().candidate_list() == [{"name": "default", "model": {}, "train": {}}]


def _leaf_keys(value: object, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [k for key, item in value.items() for k in _leaf_keys(item, f"{prefix}.{key}" if prefix else key)]
    return [prefix]


def test_every_key_is_documented() -> None:
    from conftest import REPO

    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [key for key in _leaf_keys(Config().to_dict()) if f"`{key}`" not in doc]
    assert not missing, f"document these keys in docs/configuration.md: {missing}"


@pytest.mark.parametrize("name", ["demo.yaml", "dicom-demo.yaml", "search.yaml"])
def test_every_example_config_loads_and_its_candidates_resolve(name: str) -> None:
    from conftest import REPO

    config = load_config(REPO / "examples" / name)
    for candidate in config.search.candidates:
        resolve_candidate(config.model, config.train, candidate)


def test_cli_config_prints_the_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from radpipe.cli import main

    assert main(["config", "--set", "train.epochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 7 and shown["model"]["backbone"] == "mobilenet_v2"
    assert main(["config", "--set", "train.epochs=-1"]) == 2
    assert "config key 'train.epochs'" in capsys.readouterr().err

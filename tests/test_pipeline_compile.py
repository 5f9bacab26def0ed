"""The compiled pipeline: reproducible, reloadable, naming each stage's own image."""

from __future__ import annotations

from pathlib import Path

import yaml

from radpipe.config import load_config
from radpipe.pipelines.compile import COMPILED_PIPELINE, compile_pipeline
from radpipe.pipelines.training_pipeline import STAGES

STAGE_IMAGES = {
    "ingest": "radpipe-ingest",
    "prepare-base": "radpipe-prepare-base",
    "train": "radpipe-train",
    "evaluate-and-register": "radpipe-evaluate-and-register",
}


def executors(spec: dict) -> dict[str, dict]:
    return spec["deploymentSpec"]["executors"]


def test_checked_in_yaml_is_what_the_code_compiles(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "p.yaml")
    assert fresh.read_text() == COMPILED_PIPELINE.read_text(), (
        "pipelines/radpipe-training.yaml is stale: run `make compile` and commit it"
    )


def test_compiled_pipeline_reloads_as_a_component(tmp_path: Path) -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(COMPILED_PIPELINE))
    assert loaded.name == "radpipe-training"
    assert set(loaded.component_spec.inputs) == {
        "data",
        "model",
        "train",
        "evaluate",
        "register",
        "tracking",
        "candidates",
    }
    assert {"model_uri", "model_version", "test_accuracy"} <= set(loaded.component_spec.outputs)


def test_each_stage_runs_in_its_own_image() -> None:
    spec = next(yaml.safe_load_all(COMPILED_PIPELINE.read_text()))
    images = {name.removeprefix("exec-"): e["container"]["image"] for name, e in executors(spec).items()}
    assert images == {stage: f"{image}:0.1.0" for stage, image in STAGE_IMAGES.items()}
    assert set(STAGES) == set(STAGE_IMAGES)
    for executor in executors(spec).values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command  # install_kfp_package=False, no packages_to_install


def test_registry_tag_and_config_are_compile_time_choices(tmp_path: Path) -> None:
    config = load_config(None, ["train.epochs=3", "register.model_name=lungs"])
    path = compile_pipeline(tmp_path / "p.yaml", config, image_registry="ghcr.io/acme/", image_tag="1.2.3")
    spec = next(yaml.safe_load_all(path.read_text()))
    images = {e["container"]["image"] for e in executors(spec).values()}
    assert images == {f"ghcr.io/acme/{image}:1.2.3" for image in STAGE_IMAGES.values()}
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["train"]["defaultValue"]["epochs"] == 3
    assert defaults["register"]["defaultValue"]["model_name"] == "lungs"


def test_resources_are_requested_for_the_cluster() -> None:
    spec = next(yaml.safe_load_all(COMPILED_PIPELINE.read_text()))
    train = executors(spec)["exec-train"]["container"]["resources"]
    assert train["cpuRequest"] == 2 and train["memoryLimit"] > train["memoryRequest"] > 0


def test_every_input_and_output_of_every_stage_has_a_description_for_the_kfp_ui() -> None:
    """KFP turns each component's Google-style ``Args:``/``Returns:`` docstring into the descriptions the UI
    shows next to each input and output."""
    spec = next(yaml.safe_load_all(COMPILED_PIPELINE.read_text()))
    for name in ("comp-ingest", "comp-prepare-base", "comp-train", "comp-evaluate-and-register"):
        component = spec["components"][name]
        for side in ("inputDefinitions", "outputDefinitions"):
            for kind in ("parameters", "artifacts"):
                for key, definition in component.get(side, {}).get(kind, {}).items():
                    assert definition.get("description", "").strip(), f"{name}: {side}.{kind}.{key} has none"

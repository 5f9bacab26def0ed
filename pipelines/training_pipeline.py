"""The radpipe training pipeline: ingest -> (prepare-base -> train) per candidate -> evaluate-and-register.

Each stage is a lightweight KFP component whose ``base_image`` is that stage's own image, with
``install_kfp_package=False`` and no ``packages_to_install``: the image already has radpipe, and the
same component runs unchanged in ``kfp.local.SubprocessRunner`` (in the caller's environment) and on a
cluster. Config sections travel as ``dict`` (STRUCT) parameters and are re-validated by each stage.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import dsl

from radpipe import __version__
from radpipe.components.evaluate_and_register import component as evaluate_component
from radpipe.components.ingest import component as ingest_component
from radpipe.components.prepare_base import component as prepare_base_component
from radpipe.components.train import component as train_component
from radpipe.config import Config

PIPELINE_NAME = "radpipe-training"
DEFAULT_IMAGE_TAG = __version__

STAGES = {
    "ingest": (ingest_component.ingest, ingest_component.IMAGE),
    "prepare-base": (prepare_base_component.prepare_base, prepare_base_component.IMAGE),
    "train": (train_component.train, train_component.IMAGE),
    "evaluate-and-register": (evaluate_component.evaluate_and_register, evaluate_component.IMAGE),
}

# Requests and limits for a cluster (kfp.local ignores them). Train is the heavy one.
RESOURCES = {
    "ingest": ("500m", "1", "1Gi", "2Gi"),
    "prepare-base": ("500m", "1", "2Gi", "3Gi"),
    "train": ("2", "4", "6Gi", "8Gi"),
    "evaluate-and-register": ("1", "2", "3Gi", "4Gi"),
}


def image_ref(image: str, registry: str = "", tag: str = DEFAULT_IMAGE_TAG) -> str:
    """``[registry/]image:tag``, e.g. ``radpipe-train:0.1.0`` or ``ghcr.io/acme/radpipe-train:0.1.0``."""
    prefix = registry.rstrip("/") + "/" if registry else ""
    return f"{prefix}{image}:{tag}"


def stage_components(registry: str = "", tag: str = DEFAULT_IMAGE_TAG) -> dict[str, Any]:
    return {
        name: dsl.component(
            func, base_image=image_ref(image, registry, tag), install_kfp_package=False, packages_to_install=[]
        )
        for name, (func, image) in STAGES.items()
    }


def _resources(task: Any, stage: str) -> Any:
    cpu_request, cpu_limit, memory_request, memory_limit = RESOURCES[stage]
    return (
        task.set_cpu_request(cpu_request)
        .set_cpu_limit(cpu_limit)
        .set_memory_request(memory_request)
        .set_memory_limit(memory_limit)
    )


class PipelineOutputs(NamedTuple):
    model_uri: str
    model_version: str
    gate: str
    candidate: str
    test_accuracy: float
    test_macro_f1: float


def build_pipeline(
    config: "Config | None" = None, image_registry: str = "", image_tag: str = DEFAULT_IMAGE_TAG
) -> Callable[..., Any]:
    """The pipeline function, with ``config`` as its parameters' defaults and images from ``image_registry``."""
    config = config or Config()
    ops = stage_components(image_registry, image_tag)
    defaults = {
        "data": config.data.to_dict(),
        "model": config.model.to_dict(),
        "train": config.train.to_dict(),
        "evaluate": config.evaluate.to_dict(),
        "register": config.register.to_dict(),
        "tracking": config.tracking.to_dict(),
        "candidates": config.candidate_list(),
    }

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Ingest a folder-per-class image set, train candidate classifiers, register the best in MLflow.",
    )
    def radpipe_pipeline(
        data: dict = defaults["data"],
        model: dict = defaults["model"],
        train: dict = defaults["train"],
        evaluate: dict = defaults["evaluate"],
        register: dict = defaults["register"],
        tracking: dict = defaults["tracking"],
        candidates: list = defaults["candidates"],
    ) -> PipelineOutputs:
        ingest = ops["ingest"](data=data, tracking=tracking, pipeline_job=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        ingest.set_display_name("ingest").set_caching_options(False)  # opens the run's MLflow parent run
        _resources(ingest, "ingest")
        with dsl.ParallelFor(candidates, parallelism=config.search.parallelism) as candidate:
            # Only artifacts cross into the loop: kfp.local 2.17.0 replaces task-output *parameters* inside a
            # ParallelFor with the loop item (see docs/development.md).
            base = ops["prepare-base"](dataset=ingest.outputs["dataset"], model=model, candidate=candidate)
            _resources(base.set_display_name("prepare-base"), "prepare-base")
            trained = ops["train"](
                dataset=ingest.outputs["dataset"],
                base_model=base.outputs["base_model"],
                model=model,
                train=train,
                candidate=candidate,
                tracking=tracking,
            )
            _resources(trained.set_display_name("train"), "train")
        evaluated = ops["evaluate-and-register"](
            dataset=ingest.outputs["dataset"],
            candidates=dsl.Collected(trained.outputs["trained_model"]),
            evaluate=evaluate,
            register=register,
            tracking=tracking,
            parent_run_id=ingest.outputs["parent_run_id"],
            data_fingerprint=ingest.outputs["fingerprint"],
        )
        evaluated.set_display_name("evaluate-and-register").set_caching_options(False)  # writes the registry
        _resources(evaluated, "evaluate-and-register")
        return PipelineOutputs(
            model_uri=evaluated.outputs["model_uri"],
            model_version=evaluated.outputs["model_version"],
            gate=evaluated.outputs["gate"],
            candidate=evaluated.outputs["candidate"],
            test_accuracy=evaluated.outputs["test_accuracy"],
            test_macro_f1=evaluated.outputs["test_macro_f1"],
        )

    return radpipe_pipeline

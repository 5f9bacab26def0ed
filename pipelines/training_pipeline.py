"""The radpipe training pipeline: ingest -> (prepare-base -> train) per candidate -> evaluate-and-register.

Each stage is a lightweight KFP component whose ``base_image`` is that stage's own image, with
``install_kfp_package=False`` and no ``packages_to_install``: the image already has radpipe, and the
same component runs unchanged in ``kfp.local.SubprocessRunner`` (in the caller's environment) and on a
cluster. Config sections travel as ``dict`` (STRUCT) parameters and are re-validated by each stage.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from radpipe.components.evaluate_and_register import component as evaluate_component
from radpipe.components.ingest import component as ingest_component
from radpipe.components.prepare_base import component as prepare_base_component
from radpipe.components.train import component as train_component
from radpipe.config import Config
from radpipe.images import DEFAULT_TAG, USER_ID, image_ref

PIPELINE_NAME = "radpipe-training"
DEFAULT_IMAGE_TAG = DEFAULT_TAG

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


# Where tasks on a cluster find MLflow and S3: manifests/base/kubeflow creates both in the run namespace.
CLUSTER_ENV_CONFIG_MAP = "radpipe-pipeline-env"
CLUSTER_ENV_KEYS = (
    "MLFLOW_TRACKING_URI",
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "RADPIPE_SERVING_IMAGE",
    "RADPIPE_MLFLOW_ARTIFACTS_DESTINATION",
)
CLUSTER_S3_SECRET = "radpipe-s3"
CLUSTER_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def stage_components(registry: str = "", tag: str = DEFAULT_IMAGE_TAG) -> dict[str, Any]:
    return {
        name: dsl.component(
            func, base_image=image_ref(image, registry, tag), install_kfp_package=False, packages_to_install=[]
        )
        for name, (func, image) in STAGES.items()
    }


def _stage_resources(task: Any, stage: str) -> Any:
    cpu_request, cpu_limit, memory_request, memory_limit = RESOURCES[stage]
    return (
        task.set_cpu_request(cpu_request)
        .set_cpu_limit(cpu_limit)
        .set_memory_request(memory_request)
        .set_memory_limit(memory_limit)
    )


def _cluster(task: Any) -> Any:
    """What a task needs on a cluster: the MLflow and S3 environment, and the images' non-root user.

    kfp.local ignores kfp-kubernetes settings, so the same compiled pipeline still runs locally.
    """
    kubernetes.use_config_map_as_env(task, CLUSTER_ENV_CONFIG_MAP, {key: key for key in CLUSTER_ENV_KEYS})
    kubernetes.use_secret_as_env(task, CLUSTER_S3_SECRET, {key: key for key in CLUSTER_SECRET_KEYS})
    kubernetes.set_security_context(task, run_as_user=USER_ID, run_as_group=USER_ID, run_as_non_root=True)
    return task


class PipelineOutputs(NamedTuple):
    model_uri: str
    model_version: str
    gate: str
    candidate: str
    test_accuracy: float
    test_macro_f1: float


def build_pipeline(
    config: "Config | None" = None,
    image_registry: str = "",
    image_tag: str = DEFAULT_IMAGE_TAG,
    cluster_env: bool = True,
) -> Callable[..., Any]:
    """The pipeline function, with ``config`` as its parameters' defaults and images from ``image_registry``.

    ``cluster_env`` wires every task to the ``radpipe-pipeline-env`` ConfigMap and ``radpipe-s3`` Secret
    that ``manifests/`` creates; turn it off for a cluster that provides the environment another way.
    """
    config = config or Config()
    ops = stage_components(image_registry, image_tag)

    def configure(task: Any, stage: str) -> Any:
        _stage_resources(task, stage)
        return _cluster(task) if cluster_env else task

    defaults = config.pipeline_arguments()

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
        configure(ingest, "ingest")
        with dsl.ParallelFor(candidates, parallelism=config.search.parallelism) as candidate:
            # Only artifacts cross into the loop: kfp.local 2.17.0 replaces task-output *parameters* inside a
            # ParallelFor with the loop item (see docs/development.md).
            base = ops["prepare-base"](dataset=ingest.outputs["dataset"], model=model, candidate=candidate)
            configure(base.set_display_name("prepare-base"), "prepare-base")
            trained = ops["train"](
                dataset=ingest.outputs["dataset"],
                base_model=base.outputs["base_model"],
                model=model,
                train=train,
                candidate=candidate,
                tracking=tracking,
            )
            configure(trained.set_display_name("train"), "train")
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
        configure(evaluated, "evaluate-and-register")
        return PipelineOutputs(
            model_uri=evaluated.outputs["model_uri"],
            model_version=evaluated.outputs["model_version"],
            gate=evaluated.outputs["gate"],
            candidate=evaluated.outputs["candidate"],
            test_accuracy=evaluated.outputs["test_accuracy"],
            test_macro_f1=evaluated.outputs["test_macro_f1"],
        )

    return radpipe_pipeline

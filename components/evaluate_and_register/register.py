"""Log the chosen model to MLflow and register it as a new version, then apply the alias policy.

Order matters for safety: the version is created with all its tags in one call, and aliases move only
after everything else succeeded. A run that fails earlier leaves the registry's aliases untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpipe.modelspec import ModelSpec
from radpipe.progress import log

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    model_id: str
    source: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def pip_requirements() -> list[str]:
    """Pinned to what trained the model; explicit, because inferring them re-imports the model (slow)."""
    import keras
    import tensorflow as tf

    return [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", "pillow", "numpy"]


@contextlib.contextmanager
def _keras_flavor_creates_its_folder() -> Iterator[None]:
    """Work around mlflow#16183 (open in 3.17.2): with an ``input_example`` the Keras flavor writes the
    example before it creates the model folder, and ``log_model`` fails with FileNotFoundError.

    Scoped to one ``log_model`` call; ``test_register.py`` checks the example really is logged.
    """
    import mlflow.keras

    original = mlflow.keras.save_model

    def save_model(model: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        os.makedirs(path, exist_ok=True)
        return original(model, path, *args, **kwargs)

    mlflow.keras.save_model = save_model
    try:
        yield
    finally:
        mlflow.keras.save_model = original


def log_model(model: Any, spec: ModelSpec, example: np.ndarray, run_id: str) -> Any:
    """``mlflow.keras.log_model`` into ``run_id`` with signature, input example and the radpipe record."""
    import mlflow
    from mlflow.models import infer_signature

    example = np.asarray(example, dtype=np.float32)[:1]
    signature = infer_signature(example, np.asarray(model.predict_on_batch(example), dtype=np.float32))
    with mlflow.start_run(run_id=run_id), _keras_flavor_creates_its_folder():
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={"radpipe": spec.to_dict()},
        )
    log(f"register: logged the model to MLflow run {run_id} as {info.model_uri}")
    return info


def register_version(
    model_info: Any, name: str, run_id: str, tags: dict[str, str], description: str
) -> RegisteredVersion:
    """A new version of ``name`` for the logged model, created with all its tags at once."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    client = MlflowClient()
    try:
        client.create_registered_model(
            name, description="Image classifier trained by radpipe (https://github.com/radpipe/radpipe)."
        )
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
    version = client.create_model_version(
        name=name,
        source=model_info.model_uri,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
        model_id=model_info.model_id,
    )
    log(f"register: registered {name} version {version.version}")
    return RegisteredVersion(name, str(version.version), model_info.model_id, model_info.model_uri, run_id)


def current_alias(name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def apply_alias_policy(registered: RegisteredVersion) -> list[str]:
    """The new version becomes ``challenger``; the first version ever (no champion yet) is also ``champion``."""
    from mlflow import MlflowClient

    client = MlflowClient()
    aliases = [CHALLENGER]
    if current_alias(registered.name, CHAMPION) is None:
        aliases.append(CHAMPION)
    for alias in aliases:
        client.set_registered_model_alias(registered.name, alias, registered.version)
        log(f"register: {registered.name}@{alias} -> version {registered.version}")
    return aliases

"""Log the chosen model to MLflow and register it as a new version; aliases move last (radpipe.registry).

Order matters for safety: everything that can fail on its own (scoring, plots, the champion's re-score)
happens before the registry is touched; the version is created with all its tags in one call; aliases move
only after everything else succeeded. A run that fails earlier leaves the registry as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpipe import registry
from radpipe.errors import RegistryError
from radpipe.modelspec import ModelSpec

logger = logging.getLogger(__name__)


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
    logger.info(f"register: logged the model to MLflow run {run_id} as {info.model_uri}")
    return info


PUBLISHED_TAGS = ("radpipe.model_card", "radpipe.report")
"""Version tags naming files that ``publish`` uploads: set only after the upload."""


@dataclass(frozen=True)
class Registration:
    """A registered version and the aliases it holds once the stage is done."""

    name: str
    version: str
    aliases: list[str]
    source: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register(
    mlflow_client: Any,
    name: str,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
    passed: bool,
    publish: Callable[[str], None],
    champion_alias: str = registry.CHAMPION,
    challenger_alias: str = registry.CHALLENGER,
    model_id: str | None = None,
) -> Registration:
    """Create the version (``pending``, all tags in one call), ``publish(version)`` what names the version (model
    card, report), mark it ``complete``, and only then move aliases if it ``passed`` the gate.

    Any failure after the version exists marks it ``failed`` (when MLflow still answers) and moves no alias:
    the version never looks like a good candidate.
    """
    from mlflow.exceptions import MlflowException

    # Tags that point at what publish() uploads are set once it is uploaded: a version whose stage died
    # must not point at a model card that does not exist.
    published = {k: tags[k] for k in PUBLISHED_TAGS if k in tags}
    early = {k: v for k, v in tags.items() if k not in published}
    version = registry.create_version(
        mlflow_client, name, source, run_id, early, registry.PENDING_DESCRIPTION, model_id
    )
    try:
        publish(version)
        for key, value in published.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        mlflow_client.update_model_version(name, version, description=description)
        registry.mark_complete(mlflow_client, name, version)
        aliases = (
            registry.move_gate_aliases(mlflow_client, name, version, champion_alias, challenger_alias) if passed else []
        )
    except BaseException as exc:
        recorded = registry.mark_failed(mlflow_client, name, version, f"{exc.__class__.__name__}: {exc}")
        if isinstance(exc, MlflowException):
            state = "is marked failed" if recorded else f"stays '{registry.PENDING}'"
            raise RegistryError(
                f"MLflow at {mlflow_client.tracking_uri} failed while registering {name} version {version}: "
                f"{exc.message}. No alias moved to it and the version {state}; re-run the pipeline once MLflow "
                "answers (check the server, MLFLOW_TRACKING_URI; tracking.retry_budget_seconds bounds the wait)"
            ) from exc
        raise
    if not passed:
        logger.info(f"register: {name} version {version} failed the gate: no alias moved")
    return Registration(name, version, aliases, source, run_id)

"""Registering a version in the order that keeps the registry safe; :mod:`radpipe.registry` does each step.

Order matters: everything that can fail on its own (scoring, plots, the champion's re-score) happens before
the registry is touched; the version is created ``pending`` with all its tags in one call; what names the
version (model card, report) is published while it is pending; it is marked ``complete``; aliases move last,
only if it passed the gate. :func:`pending_version` holds that order for its caller: any failure inside it
marks the version ``failed`` and moves no alias, so a version never looks like a good candidate by accident.

Also here: logging the Keras model to MLflow (:func:`log_model`), the source every version is created from.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radpipe import registry
from radpipe.errors import RegistryError
from radpipe.model_uri import version_uri
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
"""Version tags naming files published while the version is pending: set only once they are uploaded, so a
version whose stage died never points at a model card that does not exist."""


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
        return version_uri(self.name, self.version)


@dataclass
class PendingVersion:
    """A version created ``pending`` by :func:`pending_version`; :meth:`complete`, then :meth:`move_aliases`."""

    mlflow_client: Any
    name: str
    version: str
    source: str
    run_id: str
    withheld_tags: dict[str, str] = field(default_factory=dict)
    """:data:`PUBLISHED_TAGS` held back until :meth:`complete`."""

    def complete(self, description: str) -> None:
        """Everything the version names is published: set its withheld tags and description, mark it complete."""
        for key, value in self.withheld_tags.items():
            self.mlflow_client.set_model_version_tag(self.name, self.version, key, value)
        self.mlflow_client.update_model_version(self.name, self.version, description=description)
        registry.mark_complete(self.mlflow_client, self.name, self.version)

    def move_aliases(
        self, passed: bool, champion_alias: str = registry.CHAMPION, challenger_alias: str = registry.CHALLENGER
    ) -> Registration:
        """The gate's aliases for a complete version that ``passed``; none for one that failed."""
        if passed:
            held = registry.move_gate_aliases(
                self.mlflow_client, self.name, self.version, champion_alias, challenger_alias
            )
        else:
            held = []
            logger.info(f"register: {self.name} version {self.version} failed the gate: no alias moved")
        return Registration(self.name, self.version, held, self.source, self.run_id)


@contextlib.contextmanager
def pending_version(
    mlflow_client: Any, name: str, source: str, run_id: str, tags: dict[str, str], model_id: str | None = None
) -> Iterator[PendingVersion]:
    """A new version of ``name``, ``pending`` with its tags (but :data:`PUBLISHED_TAGS`) set in one call.

    A failure inside the ``with`` block marks it ``failed`` (when MLflow still answers) and moves no alias; an
    MLflow failure is raised as a :class:`RegistryError` that says what state the version was left in.
    """
    from mlflow.exceptions import MlflowException

    withheld = {k: tags[k] for k in PUBLISHED_TAGS if k in tags}
    early = {k: v for k, v in tags.items() if k not in withheld}
    version = registry.create_version(mlflow_client, name, source, run_id, early, model_id=model_id)
    try:
        yield PendingVersion(mlflow_client, name, version, source, run_id, withheld)
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


def register(
    mlflow_client: Any,
    name: str,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
    passed: bool,
    publish: Callable[[str], None] = lambda version: None,
    champion_alias: str = registry.CHAMPION,
    challenger_alias: str = registry.CHALLENGER,
    model_id: str | None = None,
) -> Registration:
    """:func:`pending_version` in one call, for callers with nothing of their own to publish but what
    ``publish(version)`` does (a model registered by hand, the registry's tests and benchmarks)."""
    with pending_version(mlflow_client, name, source, run_id, tags, model_id) as pending:
        publish(pending.version)
        pending.complete(description)
        return pending.move_aliases(passed, champion_alias, challenger_alias)

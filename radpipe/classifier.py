"""A trained radpipe model ready to classify images: used by ``radpipe predict`` and by serving.

It loads from any of the places a radpipe model lives, always through the same record of class names
and preprocessing:

- ``models:/chest-ct@champion``, ``models:/chest-ct/3``, ``runs:/<id>/model`` (MLflow resolves them);
- a local MLflow model folder (what KServe's storage initializer puts in ``/mnt/models``);
- a local radpipe model folder (``model.keras`` + ``radpipe.json``, a KFP ``Model`` artifact);
- ``s3://`` / ``https://`` URIs of either folder kind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radpipe import storage
from radpipe.batches import predict_in_batches
from radpipe.errors import ModelLoadError
from radpipe.modelspec import SPEC_FILE, ModelSpec, load_model_dir
from radpipe.preprocessing import ImageSource, batch, to_model_input

MLMODEL_FILE = "MLmodel"


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "scores": self.scores}


def _load_mlflow_dir(directory: Path) -> tuple[Any, ModelSpec]:
    import mlflow
    from mlflow.models import Model

    metadata = Model.load(str(directory / MLMODEL_FILE)).metadata or {}
    if "radpipe" not in metadata:
        raise ModelLoadError(
            f"{directory} is an MLflow model without radpipe metadata (class names, preprocessing); "
            "register models with radpipe's evaluate-and-register stage"
        )
    spec = ModelSpec.from_dict(metadata["radpipe"])
    import radpipe.layers  # noqa: F401 - registers radpipe's layers before loading

    return mlflow.keras.load_model(str(directory)), spec


def load_local(directory: str | Path) -> tuple[Any, ModelSpec]:
    directory = Path(directory)
    if (directory / SPEC_FILE).is_file():
        return load_model_dir(directory)
    if (directory / MLMODEL_FILE).is_file():
        return _load_mlflow_dir(directory)
    raise ModelLoadError(
        f"{directory} holds no radpipe model (neither {SPEC_FILE} nor {MLMODEL_FILE}); pass a model folder "
        "or an MLflow URI such as models:/chest-ct@champion"
    )


class Classifier:
    """A Keras model with its class names and the exact preprocessing it was trained with."""

    def __init__(self, model: Any, spec: ModelSpec) -> None:
        self.model = model
        self.spec = spec

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def image_size(self) -> int:
        return self.spec.preprocessing.image_size

    @classmethod
    def load(cls, uri: str) -> Classifier:
        if uri.startswith(("models:/", "runs:/")):
            return cls(*_download_mlflow(uri))
        if storage.scheme(uri) == "file":
            path = storage.local_path(uri)
            if not path.is_dir():
                raise ModelLoadError(f"{uri} is not a model folder or MLflow model URI")
            return cls(*load_local(path))
        with tempfile.TemporaryDirectory(prefix="radpipe-model-") as tmp:
            return cls(*load_local(storage.fetch(uri, tmp, label="downloading model")))

    def preprocess(self, source: ImageSource) -> np.ndarray:
        """One image as the model takes it (uint8, size x size x 3)."""
        return to_model_input(source, self.spec.preprocessing)

    def predict_arrays(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities for preprocessed images, shape (n, classes)."""
        x = batch(images)
        if x.ndim != 4 or x.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"expected images of shape (n, {self.image_size}, {self.image_size}, 3), got {tuple(x.shape)}"
            )
        return predict_in_batches(self.model, x, len(x))  # one call, or fewer images a call for a large model

    def to_predictions(self, probabilities: np.ndarray) -> list[Prediction]:
        return [
            Prediction(
                label=self.class_names[int(np.argmax(row))],
                scores={name: float(p) for name, p in zip(self.class_names, row, strict=True)},
            )
            for row in probabilities
        ]

    def predict(self, sources: Sequence[ImageSource]) -> list[Prediction]:
        return self.to_predictions(self.predict_arrays([self.preprocess(s) for s in sources]))


def _download_mlflow(uri: str) -> tuple[Any, ModelSpec]:
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="radpipe-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except MlflowException as exc:
            raise ModelLoadError(
                f"cannot resolve {uri} in the MLflow registry at {mlflow.get_tracking_uri()}: {exc.message}. "
                "Check the model name and alias/version (radpipe models NAME lists them) and MLFLOW_TRACKING_URI."
            ) from exc
        return load_local(local)

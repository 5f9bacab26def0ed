"""A radpipe model on disk: ``model.keras`` beside ``radpipe.json``.

prepare-base and train write this layout into their KFP ``Model`` artifacts; evaluate-and-register logs
the same model to MLflow with the same record as the model's metadata, so every consumer (predict,
serving, Grad-CAM) reads class names and preprocessing from one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from radpipe import storage
from radpipe.errors import ModelLoadError
from radpipe.preprocessing import Preprocessing

MODEL_FILE = "model.keras"
SPEC_FILE = "radpipe.json"
REFIT_HEAD_FILE = "refit-head.npz"
"""A trained candidate's logistic head refitted on train + validation (``kernel``, ``bias``): what
evaluate-and-register registers in place of the train-only head once the candidate is chosen."""
FORMAT = "radpipe-model/v1"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to use a model besides its weights."""

    class_names: list[str]
    preprocessing: Preprocessing
    backbone: str
    weights: str
    """Where the backbone's starting weights came from: 'imagenet', 'none' or a URI."""
    backbone_layer: str = "backbone"
    """Name of the nested backbone model inside the Keras model."""
    feature_layer: str = ""
    """Last convolutional activation inside the backbone (Grad-CAM's target)."""
    pooled_layers: list[str] = field(default_factory=list)
    """Earlier activations inside the backbone whose average-pooled outputs follow ``feature_layer``'s in
    the backbone's output (``model.intermediate_features``); empty: the last layer's alone."""
    scales: list[int] = field(default_factory=list)
    """Pixel sizes at which the backbone sees the image (``resize_<size>`` layers in front of it, pooled
    features concatenated as the layer ``features``); empty: one scale, the input size, and no ``features``
    layer (models from before scales existed)."""
    mirror: bool = False
    """Each scale's features are the average over the image and its mirror image (``mirror_<size>``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Stage-specific provenance: training config, data fingerprint, history summary."""
    members: list[ModelSpec] = field(default_factory=list)
    """Set on an ensemble (``backbone_layer`` and ``feature_layer`` empty): each member's own record, its
    ``extra["layer"]`` naming the nested member model inside the ensemble's Keras model."""

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def is_multiscale(self) -> bool:
        """The head's input is the ``features`` layer (several scales, or a mirror average)."""
        return bool(self.scales)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        data["members"] = [member.to_dict() for member in self.members]
        data["format"] = FORMAT
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        if data.get("format") != FORMAT:
            raise ModelLoadError(f"unknown model record format {data.get('format')!r}; expected {FORMAT}")
        return cls(
            class_names=list(data["class_names"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            backbone=data["backbone"],
            weights=data["weights"],
            backbone_layer=data.get("backbone_layer", "backbone"),
            feature_layer=data.get("feature_layer", ""),
            pooled_layers=list(data.get("pooled_layers", [])),
            scales=[int(x) for x in data.get("scales", [])],
            mirror=bool(data.get("mirror", False)),
            extra=dict(data.get("extra", {})),
            members=[cls.from_dict(member) for member in data.get("members", [])],
        )

    def with_extra(self, **extra: Any) -> ModelSpec:
        return ModelSpec(**{**self.__dict__, "extra": {**self.extra, **extra}})


def save_model_dir(
    model: Any, spec: ModelSpec, directory: str | Path, attachments: dict[str, bytes] | None = None
) -> None:
    """Write ``model.keras`` + ``radpipe.json`` (+ ``attachments``, file name -> bytes) into ``directory``
    as one atomic step."""
    with storage.atomic_path(directory) as staging:
        staging.mkdir(parents=True)
        model.save(staging / MODEL_FILE)
        storage.atomic_write_json(staging / SPEC_FILE, spec.to_dict())
        for name, data in (attachments or {}).items():
            (staging / name).write_bytes(data)


def read_spec(directory: str | Path) -> ModelSpec:
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise ModelLoadError(f"{directory} is not a radpipe model folder (no {SPEC_FILE})")
    return ModelSpec.from_dict(json.loads(path.read_text()))


def load_model_dir(directory: str | Path) -> tuple[Any, ModelSpec]:
    """The Keras model and its spec from a radpipe model folder."""
    import keras

    import radpipe.layers  # noqa: F401 - registers radpipe's layers before loading

    spec = read_spec(directory)
    model = keras.models.load_model(Path(directory) / MODEL_FILE, compile=False)
    return model, spec

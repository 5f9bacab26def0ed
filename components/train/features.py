"""Backbone features computed once per image and cached, so a frozen backbone costs one forward pass.

While the backbone is frozen, training the head end to end repeats the same (expensive) forward pass
every epoch. Instead the pooled features of every train/val image are computed once, stored under a key
of everything they depend on, and the head trains on them in seconds; fine-tuning then starts from that
head. Candidates that share backbone, weights and image size share the features, within a run and
across runs.

With ``train.augmented_copies``, the features of fixed random copies of every image are computed in the
same way (:mod:`radpipe.components.train.augmentation`) and cached in the same entry, keyed by the
transforms, the number of copies and the seed.

The cache is a folder or ``s3://`` prefix (``train.feature_cache``); each entry is one ``.npz`` written
atomically (a local rename, or a single S3 PUT), so concurrent candidates never see half an entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radpipe import storage
from radpipe.batches import predict_in_batches
from radpipe.components.train.augmentation import augmented_outputs
from radpipe.config import AugmentationConfig
from radpipe.dataset import Split
from radpipe.errors import StorageError
from radpipe.modelspec import ModelSpec

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeatureKey:
    """Everything a pooled feature vector depends on."""

    data_fingerprint: str
    backbone: str
    weights: str
    """'imagenet:<sha256 of the file>', '<uri>:<sha256>' or 'none:<seed>'."""
    image_size: int
    preprocessing: str
    scales: tuple[int, ...] = ()
    pooled_layers: tuple[str, ...] = ()
    augmentation: str = ""
    """With augmented copies: the transforms, how many copies and their seed (JSON); '' for none."""

    def digest(self) -> str:
        payload = json.dumps({**self.__dict__, "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Copies:
    """Augmented copies of every image whose features are computed besides the images' own."""

    config: AugmentationConfig
    count: int
    seed: int

    def describe(self) -> str:
        return json.dumps(
            {"transforms": self.config.to_dict(), "copies": self.count, "seed": self.seed}, sort_keys=True
        )


def feature_key(spec: ModelSpec, data_fingerprint: str, copies: Copies | None = None) -> FeatureKey:
    weights_id = spec.extra.get("weights_sha256") or f"random-seed-{spec.extra.get('seed', 0)}"
    return FeatureKey(
        data_fingerprint=data_fingerprint,
        backbone=spec.backbone,
        weights=f"{spec.weights}:{weights_id}",
        image_size=spec.preprocessing.image_size,
        preprocessing=json.dumps(spec.preprocessing.to_dict(), sort_keys=True),
        scales=tuple(spec.scales),
        pooled_layers=tuple(spec.pooled_layers),
        augmentation=copies.describe() if copies and copies.count else "",
    )


def head_input_layer(model: Any, spec: ModelSpec) -> Any:
    """The layer whose output the head takes: the backbone, or with several scales their concatenation."""
    return model.get_layer("features") if spec.is_multiscale else model.get_layer(spec.backbone_layer)


def feature_extractor(model: Any, spec: ModelSpec) -> Any:
    """The model up to the head's input (``normalize -> backbone``, per scale), sharing its layers."""
    import keras

    if spec.is_multiscale:
        return keras.Model(model.inputs, head_input_layer(model, spec).output, name="features")
    inputs = keras.Input(model.input_shape[1:], dtype="float32")
    pooled = model.get_layer(spec.backbone_layer)(model.get_layer("normalize")(inputs), training=False)
    return keras.Model(inputs, pooled, name="features")


def compute(extractor: Any, split: Split, batch_size: int) -> np.ndarray:
    """The backbone features of every image of ``split``, in its order."""
    return predict_in_batches(extractor, split.images, batch_size, f"train: backbone features of {split.name}")


def _entry_uri(cache: str, key: FeatureKey) -> str:
    return f"{cache.rstrip('/')}/features-{key.digest()}.npz"


def _load(uri: str, splits: list[Split], copies: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    try:
        data = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
    except StorageError:
        return None
    out, augmented = {}, {}
    for split in splits:
        paths = data.get(f"{split.name}_paths")
        if paths is None or list(paths) != split.paths:  # a different image order: recompute, never misalign
            return None
        out[split.name] = data[f"{split.name}_features"]
        if copies:
            if f"{split.name}_copies" not in data:
                return None
            augmented[split.name] = data[f"{split.name}_copies"]
    return out, augmented


def _store(
    uri: str, features: dict[str, np.ndarray], copies: dict[str, np.ndarray], splits: list[Split], key: FeatureKey
) -> None:
    buffer = io.BytesIO()
    arrays = {f"{s.name}_features": features[s.name] for s in splits}
    arrays.update({f"{s.name}_copies": copies[s.name] for s in splits if s.name in copies})
    arrays.update({f"{s.name}_paths": np.asarray(s.paths) for s in splits})
    np.savez(buffer, key=json.dumps(key.__dict__), **arrays)
    if storage.scheme(uri) == "file":
        storage.atomic_write_bytes(storage.local_path(uri), buffer.getvalue())
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(uri).name
        path.write_bytes(buffer.getvalue())
        storage.upload(path, uri, label="train: caching features")


@dataclass(frozen=True)
class Features:
    by_split: dict[str, np.ndarray]
    key: FeatureKey
    cache_hit: bool
    seconds: float
    copies: dict[str, np.ndarray] = field(default_factory=dict)
    """Per split, the features of its augmented copies: ``(copies, images, features)``; empty for none."""


def backbone_features(
    model: Any,
    spec: ModelSpec,
    splits: list[Split],
    data_fingerprint: str,
    cache: str,
    batch_size: int,
    copies: Copies | None = None,
) -> Features:
    """Pooled backbone features for ``splits`` (and for ``copies`` of their images): from ``cache`` when
    there, else computed (and cached)."""
    import time

    started = time.monotonic()
    wanted = copies is not None and copies.count > 0
    key = feature_key(spec, data_fingerprint, copies)
    uri = _entry_uri(cache, key) if cache else ""
    if uri:
        cached = _load(uri, splits, wanted)
        if cached is not None:
            logger.info(f"train: backbone features from the cache ({uri})")
            return Features(cached[0], key, True, time.monotonic() - started, cached[1])
    extractor = feature_extractor(model, spec)
    features = {split.name: compute(extractor, split, batch_size) for split in splits}
    augmented: dict[str, np.ndarray] = {}
    if wanted:
        for split in splits:
            augmented[split.name] = augmented_outputs(
                extractor,
                split.images,
                copies.config,
                copies.count,
                copies.seed,
                batch_size,
                f"train: backbone features of {copies.count} augmented copies of {split.name}",
            )
    if uri:
        _store(uri, features, augmented, splits, key)
        logger.info(f"train: cached backbone features at {uri}")
    return Features(features, key, False, time.monotonic() - started, augmented)

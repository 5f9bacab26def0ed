"""Reading radpipe's normalised data set (the ingest stage's ``Dataset`` artifact).

Layout: ``<split>/<class>/<file>`` plus ``manifest.json``; ``components/ingest/ingest.py`` writes it.
Images are decoded by the one shared preprocessing function and held as uint8, so a whole chest CT
data set at 224 px fits in about 100 MB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radpipe.errors import DataError
from radpipe.preprocessing import Preprocessing, to_model_input
from radpipe.progress import Progress

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{dataset_dir} is not a radpipe data set (no {MANIFEST}); run the ingest stage first")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Split:
    """One split, decoded: ``images`` uint8 (n, size, size, 3), ``labels`` int indices into class_names."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    class_names: list[str]
    groups: list[str] = field(default_factory=list)
    """Each image's group key (slices of one scan share one); a data set ingested before radpipe grouped
    images has none recorded, and then each image is a group of its own."""

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}


def load_split(
    dataset_dir: str | Path, split: str, preprocessing: Preprocessing, class_names: list[str] | None = None
) -> Split:
    """Decode every image of ``split`` as the model will see it (with progress)."""
    dataset_dir = Path(dataset_dir)
    manifest = read_manifest(dataset_dir)
    classes = list(class_names or manifest["classes"])
    unknown = sorted(set(manifest["classes"]) - set(classes))
    if unknown:
        raise DataError(f"the data set has classes {unknown} that the model does not know ({classes})")
    entries = [f for f in manifest["files"] if f["split"] == split]
    size = preprocessing.image_size
    images = np.zeros((len(entries), size, size, 3), dtype=np.uint8)
    with Progress(f"loading {split} images", len(entries), "images") as bar:
        for i, entry in enumerate(entries):
            images[i] = to_model_input(dataset_dir / entry["path"], preprocessing)
            bar.update()
    labels = np.asarray([classes.index(f["class"]) for f in entries], dtype=np.int64)
    paths = [f["path"] for f in entries]
    groups = [str(f.get("group") or f["path"]) for f in entries]
    return Split(split, images, labels, paths, classes, groups)

"""DICOM files at ingest: read once, keep a de-identified copy, group by patient, summarise.

The data set ingest writes is a KFP artifact that train, evaluate and a cluster's object store all see,
so a DICOM file never goes into it as it came: ingest stores :func:`radpipe.dicom.deidentified_copy` (the
chosen frame's pixels, the tags needed to read them, the allow-listed technical tags) and records the
technical tags in the manifest. The file's group key is the patient (PatientID), else the study
(StudyInstanceUID), as a salted hash (:func:`radpipe.dicom.group_key`); the salt comes from
``RADPIPE_GROUP_SALT`` or is drawn per run and never stored.

The perceptual hash of a DICOM slice (near-duplicates) is taken through the lung window, whatever the
model's window: it only has to be the same for every DICOM file of a run.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from radpipe import dicom
from radpipe.components.ingest.near_duplicates import perceptual_hash

HASH_WINDOW = dicom.parse_window("lung")
FORMAT = "DICOM"


@dataclass(frozen=True)
class DicomSlice:
    """What ingest keeps of one DICOM file."""

    stored: Path
    """The de-identified copy, in ingest's work folder; this is what the data set holds."""
    sha256: str
    """Of the de-identified copy: the same slice exported twice (other headers) is one image."""
    width: int
    height: int
    mode: str
    """The photometric interpretation the pixels were read as (MONOCHROME1/2 or RGB)."""
    phash: str
    group_key: str | None
    tags: dict[str, Any]
    """:func:`radpipe.dicom.describe`: the allow-listed technical tags and how the pixels were read."""


def read(path: Path, store: Path, salt: bytes, hash_it: bool) -> DicomSlice:
    """Read ``path``, write its de-identified copy to ``store`` and describe it; :class:`dicom.DicomError`
    (:class:`dicom.NotAnImageError` for reports, RT objects, ...) if it cannot be used."""
    ds = dicom.read_dataset(path)
    piece = dicom.read_slice(ds)
    copy = dicom.deidentified_copy(ds, piece)
    sha = hashlib.sha256(copy).hexdigest()
    target = store / f"{sha}.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(copy)
    phash = ""
    if hash_it:
        if piece.is_colour:
            picture = Image.fromarray(piece.pixels, "RGB")
        else:
            grey = dicom.apply_windows(piece.pixels, [HASH_WINDOW], piece.photometric == "MONOCHROME1")
            picture = Image.fromarray(grey, "RGB")
        phash = perceptual_hash(picture)
    rows, columns = piece.pixels.shape[:2]
    return DicomSlice(
        stored=target,
        sha256=sha,
        width=int(columns),
        height=int(rows),
        mode=piece.photometric,
        phash=phash,
        group_key=dicom.group_key(ds, salt),
        tags=dicom.describe(ds, piece),
    )


def summarize(files: Iterable[tuple[str, str, dict[str, Any] | None, str | None]]) -> dict[str, Any]:
    """The report's ``dicom`` section from (class, format, technical tags, group key) of every kept image:
    counts only, of allow-listed values."""
    formats: dict[str, Counter[str]] = {}
    modalities: Counter[str] = Counter()
    models: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    n = 0
    for label, fmt, tags, key in files:
        formats.setdefault(label, Counter())[FORMAT if fmt == FORMAT else "other"] += 1
        if fmt != FORMAT or tags is None:
            continue
        n += 1
        modalities[str(tags.get("modality", "unknown"))] += 1
        if tags.get("manufacturer_model"):
            models[str(tags["manufacturer_model"])] += 1
        keys[key.split(":", 1)[0] if key and key.split(":", 1)[0] in ("patient", "study") else "file name"] += 1
    if not n:
        return {}
    return {
        "files": n,
        "modalities": dict(sorted(modalities.items())),
        "manufacturer_models": dict(sorted(models.items())),
        "grouped_by": dict(sorted(keys.items())),
        "dicom_by_class": {label: c[FORMAT] for label, c in sorted(formats.items())},
        "other_by_class": {label: c["other"] for label, c in sorted(formats.items())},
    }


def format_confound(summary: dict[str, Any]) -> str:
    """A warning when some classes are all DICOM and others have none: a model can then tell the classes
    apart by how their files were rendered instead of by what they show."""
    if not summary:
        return ""
    dicom_by_class, other_by_class = summary["dicom_by_class"], summary["other_by_class"]
    only_dicom = [c for c in dicom_by_class if dicom_by_class[c] and not other_by_class[c]]
    no_dicom = [c for c in dicom_by_class if not dicom_by_class[c]]
    if only_dicom and no_dicom:
        return (
            f"classes {', '.join(only_dicom)} are all DICOM and {', '.join(no_dicom)} have no DICOM: the model may "
            "learn the file format (DICOM windowing vs the PNG/JPEG export) instead of the findings; give every "
            "class the same kind of files"
        )
    return ""

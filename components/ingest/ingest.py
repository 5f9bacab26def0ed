"""Ingest: turn a folder-per-class image set into radpipe's normalised, de-duplicated data set.

Input layouts (local folder, ``s3://`` prefix, or a .zip/.tar.gz at any of those or at an https URL)::

    <root>/<class folder>/**/<image>                       # no splits: all three are made
    <root>/{train,valid|val,test}/<class folder>/**/<image> # any subset; missing splits are made

Images are PNG/JPEG/... files and DICOM files (``.dcm``, or any file with the ``DICM`` preamble); a DICOM
file goes into the data set only as a de-identified copy (``dicom_files.py``).

The class of a folder is ``class_map[folder]`` if given, else the folder name up to the first
``class_separator`` (the Kaggle chest CT layout names ``adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib``
in train and ``adenocarcinoma`` in test).

Output (a KFP ``Dataset``)::

    train/<class>/<file>  val/<class>/<file>  test/<class>/<file>  manifest.json

Leakage matters more than size: an exact copy (same sha256) of a training image is removed from the
evaluation splits, an image filed under two classes is dropped everywhere, and both are reported. So is a
near-duplicate (perceptual hash, ``near_duplicates.py``) of a training image in a given validation or test
split, listed with its training look-alike. Splits that ingest makes are group-disjoint (``grouping.py``):
slices of one scan, and near-duplicates, never straddle two of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radpipe import dataset, dicom, storage
from radpipe.components.ingest import dicom_files, grouping
from radpipe.components.ingest.near_duplicates import HASH_BITS, HASH_NAME, Pair, close_pairs, perceptual_hash
from radpipe.config import DataConfig
from radpipe.errors import DataError
from radpipe.preprocessing import (
    IMAGE_EXTENSIONS,
    ImageError,
    ImageTooLargeError,
    check_pixels,
    is_dicom,
    is_image_file,
    open_image,
    to_rgb,
)
from radpipe.progress import Progress

logger = logging.getLogger(__name__)

SPLITS = dataset.SPLITS
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db"}
MANIFEST = dataset.MANIFEST


@dataclass
class SourceImage:
    path: Path
    relpath: str
    split: str | None
    folder: str
    label: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    phash: str = ""
    group_key: str | None = None
    """What ties this image to others: the scan id from its file name (``name:<class>/<scan>``); None = none."""
    group: str = ""
    """Its group after joining equal keys and near-duplicates (the smallest key in the group)."""
    stored: Path | None = None
    """A DICOM file's de-identified copy: what the data set holds instead of the file itself."""
    dicom: dict[str, Any] | None = None
    """A DICOM file's allow-listed technical tags (:func:`radpipe.dicom.describe`)."""


@dataclass
class IngestReport:
    """What ingest did to the data, so that nobody has to guess why a count changed."""

    fingerprint: str = ""
    class_names: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    created_splits: list[str] = field(default_factory=list)
    removed_cross_split_duplicates: list[dict[str, str]] = field(default_factory=list)
    removed_within_split_duplicates: list[dict[str, str]] = field(default_factory=list)
    removed_conflicting_labels: list[dict[str, Any]] = field(default_factory=list)
    removed_near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    """Given val/test images within the threshold of a training image: ``removed``, ``split``, ``like`` (the
    training image), ``distance`` (bits)."""
    near_duplicates: dict[str, Any] = field(default_factory=dict)
    """The hash, the threshold, and near-duplicate pairs by pair of splits: ``found`` among the given splits
    (before removal) and ``left`` in the data set written."""
    grouping: dict[str, Any] = field(default_factory=dict)
    """How images were grouped, how many groups, the largest, and groups found in more than one split."""
    removed_same_patient: list[dict[str, str]] = field(default_factory=list)
    """Given val/test DICOM images of a patient (or study) who also has training images: ``removed``,
    ``split``, ``group`` (the salted hash)."""
    dicom: dict[str, Any] = field(default_factory=dict)
    """DICOM files kept: counts by modality, scanner model and group key (allow-listed values only)."""
    unreadable: list[dict[str, str]] = field(default_factory=list)
    skipped_non_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"classes: {', '.join(self.class_names)}"]
        for split in SPLITS:
            per_class = self.counts.get(split, {})
            lines.append(
                f"{split:>5}: {sum(per_class.values()):5d}  " + "  ".join(f"{c}={n}" for c, n in per_class.items())
            )
        if self.created_splits:
            lines.append(f"made splits (seeded, stratified, group-disjoint): {', '.join(self.created_splits)}")
        if self.grouping:
            g = self.grouping
            lines.append(
                f"groups: {g['groups']} (largest {g['largest']} images; by {', '.join(g['by']) or 'file'}); "
                f"groups in more than one split: {g['across_splits']}"
            )
        if self.near_duplicates:
            nd = self.near_duplicates
            lines.append(
                f"near-duplicates ({nd['hash']} within {nd['max_bits']} bits): found across given splits "
                + (", ".join(f"{k} {v}" for k, v in nd["found"].items()) or "none")
                + "; left in the data set "
                + (", ".join(f"{k} {v}" for k, v in nd["left"].items() if v) or "none")
            )
        for label, items in (
            ("exact copies removed from evaluation splits (leakage)", self.removed_cross_split_duplicates),
            ("near-duplicates of training images removed from evaluation splits", self.removed_near_duplicates),
            ("images of patients with training images removed from evaluation splits", self.removed_same_patient),
            ("exact copies removed within a split", self.removed_within_split_duplicates),
            ("images filed under more than one class, dropped", self.removed_conflicting_labels),
            ("unreadable images skipped", self.unreadable),
            ("non-image files skipped", self.skipped_non_images),
        ):
            if items:
                lines.append(f"{label}: {len(items)}")
        if self.dicom:
            lines.append(
                f"DICOM files: {self.dicom['files']} ("
                + ", ".join(f"{k} {v}" for k, v in self.dicom["modalities"].items())
                + "; grouped by "
                + ", ".join(f"{k} {v}" for k, v in self.dicom["grouped_by"].items())
                + ")"
            )
        lines.append(f"fingerprint: {self.fingerprint}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- discovery


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in IGNORED_NAMES and not p.name.startswith("."))


def _holds_images(folder: Path) -> bool:
    return any(c.is_file() and is_image_file(c) for c in _visible_children(folder))


def find_root(path: Path) -> Path:
    """Descend through wrapper folders (an archive's single top folder, ``Data/``) to the data set root.

    A lone folder that holds images itself is a class folder, not a wrapper: descending into it would turn
    its images into stray files and the data set into "no readable images" instead of "only one class".
    """
    while True:
        children = _visible_children(path)
        dirs = [c for c in children if c.is_dir()]
        if len(dirs) == 1 and not any(c.is_file() and is_image_file(c) for c in children):
            if dirs[0].name.lower() in SPLIT_ALIASES:  # a lone train/ folder is a split, not a wrapper
                return path
            if _holds_images(dirs[0]):  # a lone class folder
                return path
            path = dirs[0]
            continue
        return path


def load_class_map(
    class_map: dict[str, str] | str, timeout: float = storage.DEFAULT_DOWNLOAD_TIMEOUT
) -> dict[str, str]:
    if not class_map:
        return {}
    if isinstance(class_map, dict):
        mapping: Any = class_map
    else:
        try:
            mapping = yaml.safe_load(storage.read_bytes(class_map, timeout, storage.TIMEOUT_KEY))
        except yaml.YAMLError as exc:
            raise DataError(f"class map {class_map} is not valid YAML: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise DataError(
            f"class map {class_map!r} must be a mapping of folder name to class name, e.g. "
            "'adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib: adenocarcinoma'"
        )
    return mapping


def class_of(folder: str, class_map: dict[str, str], separator: str) -> str:
    label = class_map.get(folder) or (folder.split(separator, 1)[0] if separator else folder)
    label = label.strip()
    if not label or "/" in label or label in (".", ".."):
        raise DataError(f"folder {folder!r} gives an invalid class name {label!r}; add it to data.class_map")
    return label


def discover(root: Path, class_map: dict[str, str], separator: str, report: IngestReport) -> list[SourceImage]:
    """List candidate images with their split (None when the data set has no splits) and class."""
    top = _visible_children(root)
    split_dirs = {SPLIT_ALIASES[p.name.lower()]: p for p in top if p.is_dir() and p.name.lower() in SPLIT_ALIASES}
    images: list[SourceImage] = []
    if split_dirs:
        if "train" not in split_dirs:
            raise DataError(
                f"{root} has split folders ({', '.join(p.name for p in split_dirs.values())}) but no train/ folder; "
                "add train/<class>/... or give a folder of class folders without splits"
            )
        others = [p.name for p in top if p.is_dir() and p.name.lower() not in SPLIT_ALIASES]
        if others:
            logger.info(f"ingest: ignoring folders beside the splits: {', '.join(others)}")
        sources = [(split, folder) for split, folder in split_dirs.items()]
    else:
        sources = [(None, root)]
    for split, split_root in sources:
        for entry in _visible_children(split_root):
            if entry.is_file():
                report.skipped_non_images.append(f"{entry.relative_to(root)} (not inside a class folder)")
                continue
            label = class_of(entry.name, class_map, separator)
            files = sorted(
                p
                for p in entry.rglob("*")
                if p.is_file()
                and not any(part in IGNORED_NAMES or part.startswith(".") for part in p.relative_to(entry).parts)
            )
            if not files:
                raise DataError(
                    f"class folder {entry.relative_to(root)} is empty; add images to it or remove the folder"
                )
            for path in files:
                rel = path.relative_to(root).as_posix()
                if not is_image_file(path):
                    report.skipped_non_images.append(rel)
                    continue
                images.append(SourceImage(path=path, relpath=rel, split=split, folder=entry.name, label=label))
    return images


def inspect_images(
    images: list[SourceImage], config: DataConfig, report: IngestReport, workdir: Path | None = None
) -> list[SourceImage]:
    """Hash and decode every image (with progress); unreadable ones are reported and skipped. DICOM files
    are de-identified into ``workdir`` (see ``dicom_files.py``)."""
    pattern = re.compile(config.group_pattern) if config.group_pattern else None
    salt = dicom.group_salt()
    readable = []
    with Progress("ingest: reading images", len(images), "files") as bar:
        for image in images:
            check_size(image, config)
            if is_dicom(image.path):
                if _inspect_dicom(image, config, report, Path(workdir or ".") / "deidentified", salt):
                    image.group_key = image.group_key or grouping.name_key(_stem(image), image.label, pattern)
                    readable.append(image)
                bar.update()
                continue
            data = image.path.read_bytes()
            image.sha256 = hashlib.sha256(data).hexdigest()
            try:
                decoded = open_image(data)
            except ImageError as exc:
                report.unreadable.append({"path": image.relpath, "error": str(exc).replace("the data", "file")})
            else:
                image.width, image.height = decoded.size
                image.mode, image.format = decoded.mode, decoded.format or ""
                if config.near_duplicates:
                    image.phash = perceptual_hash(to_rgb(decoded))
                image.group_key = grouping.name_key(image.path.stem, image.label, pattern)
                readable.append(image)
            bar.update()
    return readable


def check_size(image: SourceImage, config: DataConfig) -> None:
    """Refuse a file over ``data.max_file_bytes`` before reading it, and an image over
    ``data.max_image_pixels`` from its header before decoding it: one 684 KB PNG of 13000 x 13000 pixels
    would otherwise take gigabytes to decode."""
    size = image.path.stat().st_size
    if size > config.max_file_bytes:
        raise DataError(
            f"{image.relpath} is {size} bytes, more than data.max_file_bytes allows ({config.max_file_bytes}); "
            "remove the file or raise data.max_file_bytes"
        )
    try:
        check_pixels(image.path, config.max_image_pixels, "data.max_image_pixels")
    except ImageTooLargeError as exc:
        raise DataError(str(exc).replace(str(image.path), image.relpath, 1)) from None
    except ImageError:
        pass  # not readable: reported as such when it is decoded


def _stem(image: SourceImage) -> str:
    """The file name without its extension; DICOM files are often named by UID (``1.2.840....``), no extension."""
    if image.format == dicom_files.FORMAT and image.path.suffix.lower() not in dicom.DICOM_EXTENSIONS:
        return image.path.name
    return image.path.stem


def _inspect_dicom(image: SourceImage, config: DataConfig, report: IngestReport, store: Path, salt: bytes) -> bool:
    """Read one DICOM file into ``image``; report why not (not an image, undecodable) and return False."""
    try:
        found = dicom_files.read(image.path, store, salt, config.near_duplicates)
    except dicom.NotAnImageError as exc:
        report.skipped_non_images.append(f"{image.relpath} ({exc})")
        return False
    except dicom.DicomError as exc:
        report.unreadable.append({"path": image.relpath, "error": f"DICOM file {exc}"})
        return False
    image.stored, image.sha256, image.dicom = found.stored, found.sha256, found.tags
    image.width, image.height, image.mode, image.format = found.width, found.height, found.mode, dicom_files.FORMAT
    image.phash, image.group_key = found.phash, found.group_key
    return True


# ------------------------------------------------------------------------------------ de-duplication


_SPLIT_RANK = {"train": 0, "val": 1, "test": 2, None: 3}


def deduplicate(images: list[SourceImage], report: IngestReport) -> list[SourceImage]:
    """One copy per sha256: train wins over val over test; an image under two classes is dropped."""
    by_hash: dict[str, list[SourceImage]] = defaultdict(list)
    for image in images:
        by_hash[image.sha256].append(image)
    kept = []
    for sha, copies in by_hash.items():
        labels = sorted({c.label for c in copies})
        if len(labels) > 1:
            report.removed_conflicting_labels.append(
                {"sha256": sha, "classes": labels, "paths": [c.relpath for c in copies]}
            )
            continue
        copies.sort(key=lambda c: (_SPLIT_RANK[c.split], c.relpath))
        keep = copies[0]
        kept.append(keep)
        for dup in copies[1:]:
            entry = {"removed": dup.relpath, "kept": keep.relpath, "sha256": sha}
            if dup.split == keep.split:
                report.removed_within_split_duplicates.append(entry)
            else:
                report.removed_cross_split_duplicates.append(entry)
    return sorted(kept, key=lambda c: c.relpath)


# ------------------------------------------------------------------------- near-duplicates and groups


def _split_pair(a: str | None, b: str | None) -> str:
    first, second = sorted((a or "train", b or "train"), key=SPLITS.index)
    return f"{first}-{second}"


def _cross_split_pairs(images: list[SourceImage], pairs: list[Pair]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for pair in pairs:
        a, b = images[pair.first].split, images[pair.second].split
        if a != b:
            counts[_split_pair(a, b)] += 1
    return {key: counts[key] for key in ("train-val", "train-test", "val-test")}


def find_near_duplicates(images: list[SourceImage], config: DataConfig) -> list[Pair]:
    """Every pair of images whose perceptual hashes are within ``data.near_duplicate_bits``."""
    if not config.near_duplicates:
        return []
    started = time.monotonic()
    pairs = list(close_pairs([i.phash for i in images], config.near_duplicate_bits))
    logger.info(
        f"ingest: {len(pairs)} near-duplicate pairs among {len(images)} images "
        f"({HASH_NAME} within {config.near_duplicate_bits} bits, {time.monotonic() - started:.1f} s)"
    )
    return pairs


def remove_near_duplicates(
    images: list[SourceImage], pairs: list[Pair], config: DataConfig, report: IngestReport
) -> tuple[list[SourceImage], list[Pair]]:
    """Drop given val/test images that have a training look-alike; report each with its closest one."""
    if not config.near_duplicates:
        return images, pairs
    found = _cross_split_pairs(images, pairs)
    closest: dict[int, tuple[int, int]] = {}  # evaluation image -> (distance, training image)
    for pair in pairs:
        for this, other in ((pair.first, pair.second), (pair.second, pair.first)):
            if images[this].split in ("val", "test") and images[other].split == "train":
                best = closest.get(this)
                candidate = (pair.distance, other)
                if best is None or (candidate[0], images[other].relpath) < (best[0], images[best[1]].relpath):
                    closest[this] = candidate
    for index in sorted(closest, key=lambda i: images[i].relpath):
        distance, like = closest[index]
        report.removed_near_duplicates.append(
            {
                "removed": images[index].relpath,
                "split": images[index].split,
                "like": images[like].relpath,
                "distance": distance,
            }
        )
    kept_index = {old: new for new, old in enumerate(i for i in range(len(images)) if i not in closest)}
    kept = [image for i, image in enumerate(images) if i not in closest]
    kept_pairs = [
        Pair(kept_index[pair.first], kept_index[pair.second], pair.distance)
        for pair in pairs
        if pair.first in kept_index and pair.second in kept_index
    ]
    report.near_duplicates = {
        "hash": f"{HASH_NAME} ({HASH_BITS} bits)",
        "max_bits": config.near_duplicate_bits,
        "found": found,
        "left": {},
    }
    return kept, kept_pairs


def remove_same_patient(images: list[SourceImage], report: IngestReport) -> list[SourceImage]:
    """Drop given val/test images whose DICOM patient (or study) also has training images: a patient id is
    an identity, not a guess like a file name, so no patient straddles train and evaluation."""
    in_train = {i.group_key for i in images if i.split == "train" and _is_identity(i.group_key)}
    kept = []
    for image in images:
        if image.split in ("val", "test") and _is_identity(image.group_key) and image.group_key in in_train:
            report.removed_same_patient.append(
                {"removed": image.relpath, "split": str(image.split), "group": str(image.group_key)}
            )
        else:
            kept.append(image)
    return kept


def _is_identity(key: str | None) -> bool:
    return bool(key) and str(key).startswith(("patient:", "study:"))


def group_images(images: list[SourceImage], pairs: list[Pair], config: DataConfig, report: IngestReport) -> None:
    """Give every image its group: equal group keys and near-duplicates are joined."""
    keys = [i.group_key or f"file:{i.sha256[:16]}" for i in images]
    for image, group in zip(images, grouping.connected_groups(keys, ((p.first, p.second) for p in pairs)), strict=True):
        image.group = group
    sizes = Counter(i.group for i in images)
    by = []
    if any(i.group_key and i.group_key.startswith("patient:") for i in images):
        by.append("DICOM patient")
    if any(i.group_key and i.group_key.startswith("study:") for i in images):
        by.append("DICOM study")
    if any(i.group_key and i.group_key.startswith("name:") for i in images):
        by.append("file-name pattern")
    if pairs:
        by.append("near-duplicates")
    report.grouping = {
        "by": by,
        "pattern": config.group_pattern,
        "groups": len(sizes),
        "largest": max(sizes.values(), default=0),
        "across_splits": 0,
    }


# ------------------------------------------------------------------------------------------ splitting


def assign_splits(images: list[SourceImage], config: DataConfig, report: IngestReport) -> None:
    """Make the missing splits from train (or from everything), taking whole groups, stratified by class."""
    present = {i.split for i in images}
    if None in present:
        for image in images:
            image.split = "train"
        missing = ["val", "test"]
    else:
        missing = [s for s in ("val", "test") if s not in present]
    if not missing:
        return
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    pool = [i for i in images if i.split == "train"]
    totals = Counter(i.label for i in pool)
    members: dict[str, list[SourceImage]] = defaultdict(list)
    for image in pool:
        members[image.group or image.sha256].append(image)
    groups = {g: Counter(i.label for i in items) for g, items in members.items()}
    sort_keys = {g: min(i.sha256 for i in items) for g, items in members.items()}
    order = grouping.order_groups(groups, sort_keys, config.seed)
    for split in missing:
        available = Counter(i.label for i in pool)
        targets = {c: grouping.target_count(available[c], fractions[split] * totals[c]) for c in available}
        chosen = grouping.choose_groups([g for g in order if g in groups], groups, targets, available)
        for group in chosen:
            for image in members[group]:
                image.split = split
            del groups[group]
        pool = [i for i in pool if i.split == "train"]
    report.created_splits = missing


# --------------------------------------------------------------------------------------------- checks


def check_classes(images: list[SourceImage], source: str) -> list[str]:
    if not images:
        raise DataError(
            f"no readable images found in {source}; expected <class>/<image> or <split>/<class>/<image> "
            f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    train_counts = Counter(i.label for i in images if i.split == "train")
    labels = sorted({i.label for i in images})
    if len(labels) < 2:
        raise DataError(
            f"only one class ({labels[0]!r}) found in {source}; a classifier needs at least two class folders"
        )
    missing = [label for label in labels if train_counts[label] == 0]
    if missing:
        raise DataError(
            f"class(es) {', '.join(missing)} have no training images after de-duplication; "
            "add training images for them or map them to another class with data.class_map"
        )
    return labels


# ---------------------------------------------------------------------------------------------- output


def _safe_name(image: SourceImage) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", _stem(image)).strip("._") or "image"
    suffix = ".dcm" if image.format == dicom_files.FORMAT else image.path.suffix.lower()
    return f"{stem[:80]}-{image.sha256[:10]}{suffix}"


def fingerprint(images: Iterable[SourceImage], class_names: list[str]) -> str:
    """sha256 over (split, class, content hash) of every kept image: same images in same splits, same print."""
    digest = hashlib.sha256(json.dumps(class_names).encode())
    for split, label, sha in sorted((i.split or "", i.label, i.sha256) for i in images):
        digest.update(f"{split}\t{label}\t{sha}\n".encode())
    return digest.hexdigest()


def write_dataset(images: list[SourceImage], report: IngestReport, output_dir: Path, source_uri: str) -> None:
    """Copy the kept images into the normalised layout and write manifest.json, all-or-nothing."""
    with storage.atomic_path(output_dir) as staging:
        staging.mkdir(parents=True)
        files = []
        with Progress("ingest: writing data set", len(images), "files") as bar:
            for image in sorted(images, key=lambda i: (SPLITS.index(i.split or "train"), i.label, i.relpath)):
                rel = f"{image.split}/{image.label}/{_safe_name(image)}"
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image.stored or image.path, target)  # a DICOM file: its de-identified copy
                files.append(
                    {
                        "path": rel,
                        "split": image.split,
                        "class": image.label,
                        "sha256": image.sha256,
                        "width": image.width,
                        "height": image.height,
                        "mode": image.mode,
                        "format": image.format,
                        "group": image.group,
                        "phash": image.phash,
                        "source": image.relpath,
                        **({"dicom": image.dicom} if image.dicom else {}),
                    }
                )
                bar.update()
        manifest = {
            "format": "radpipe-dataset/v1",
            "source": source_uri,
            "fingerprint": report.fingerprint,
            "classes": report.class_names,
            "counts": report.counts,
            "files": files,
            "report": {k: v for k, v in report.__dict__.items() if k not in ("fingerprint", "class_names", "counts")},
        }
        storage.atomic_write_json(staging / MANIFEST, manifest)


def _splits_of_groups(images: list[SourceImage]) -> dict[str, set[str | None]]:
    splits: dict[str, set[str | None]] = defaultdict(set)
    for image in images:
        splits[image.group].add(image.split)
    return splits


def archive_limits(config: DataConfig) -> storage.ArchiveLimits:
    return storage.ArchiveLimits(
        max_bytes=config.max_archive_bytes,
        max_members=config.max_archive_members,
        max_ratio=config.max_archive_ratio,
        max_file_bytes=config.max_file_bytes,
    )


def ingest(config: DataConfig, output_dir: str | Path, workdir: str | Path) -> IngestReport:
    """Read ``config.uri`` and write the normalised data set to ``output_dir``; return what happened."""
    if not config.uri:
        raise DataError("no data given: pass --data PATH_OR_URI or set data.uri")
    report = IngestReport()
    workdir = Path(workdir)
    source = storage.fetch(
        config.uri,
        workdir / "download",
        label="ingest: downloading",
        timeout=config.download_timeout_seconds,
        timeout_key=storage.TIMEOUT_KEY,
    )
    if storage.is_archive(source):
        logger.info(f"ingest: unpacking {source.name}")
        source = storage.unpack(source, workdir / "unpacked", archive_limits(config))
    if not source.is_dir():
        raise DataError(f"{config.uri} is neither a folder nor a .zip/.tar.gz archive of one")
    root = find_root(source)
    class_map = load_class_map(config.class_map, config.download_timeout_seconds)
    images = discover(root, class_map, config.class_separator, report)
    logger.info(f"ingest: found {len(images)} image files under {config.uri}")
    images = inspect_images(images, config, report, workdir)
    images = deduplicate(images, report)
    images = remove_same_patient(images, report)
    pairs = find_near_duplicates(images, config)
    images, pairs = remove_near_duplicates(images, pairs, config, report)
    group_images(images, pairs, config, report)
    assign_splits(images, config, report)
    report.grouping["across_splits"] = sum(1 for splits in _splits_of_groups(images).values() if len(splits) > 1)
    if report.grouping["across_splits"]:
        logger.warning(
            f"ingest: {report.grouping['across_splits']} groups (scans) have images in more than one of "
            "the given splits; splits made by ingest never divide a group, given ones are kept as they are"
        )
    if config.near_duplicates:
        report.near_duplicates["left"] = _cross_split_pairs(images, pairs)
    report.dicom = dicom_files.summarize((i.label, i.format, i.dicom, i.group_key) for i in images)
    if warning := dicom_files.format_confound(report.dicom):
        logger.warning(f"ingest: {warning}")
    report.class_names = check_classes(images, config.uri)
    report.counts = {
        split: {label: sum(1 for i in images if i.split == split and i.label == label) for label in report.class_names}
        for split in SPLITS
    }
    for split in ("val", "test"):
        empty = [label for label, n in report.counts[split].items() if n == 0]
        if empty:
            logger.warning(f"ingest: no {split} images left for {', '.join(empty)}; metrics for them will be missing")
    report.fingerprint = fingerprint(images, report.class_names)
    write_dataset(images, report, Path(output_dir), config.uri)
    logger.info("ingest: done\n" + report.summary())
    return report

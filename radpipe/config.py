"""The one configuration model of radpipe.

A run is configured by the defaults below, then a YAML file (``--config``), then ``--set key=value``
overrides, in that order. The result is validated once, up front, so that a typo fails in a second
with a message naming the key, instead of an hour later inside a pipeline task.

The pipeline receives each section as a plain ``dict`` parameter (a KFP ``STRUCT``) and every stage
validates its section again with the same classes: the KFP UI and a cluster submission see the same
keys, and a stage never trusts a hand-edited run parameter.

Sections and their keys are documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from radpipe import dicom
from radpipe.aliases import alias_problem
from radpipe.backbones import BACKBONES
from radpipe.errors import ConfigError
from radpipe.preprocessing import FRAMINGS, INTENSITIES

S = TypeVar("S", bound="Section")

DEFAULT_MAX_ARCHIVE_BYTES = 10 * 1024**3
DEFAULT_MAX_FILE_BYTES = 256 * 1024**2
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
"""25 megapixels (5000 x 5000): above digital radiographs and mammograms; what serving accepts by default."""

DEFAULT_GROUP_PATTERN = r"(?P<scan>.+?)(?:\s*\(\d+\)|\s*-\s*Copy)*"
"""A scan id followed by any number of ``" (N)"`` and ``" - Copy"`` (what copying files in a file manager adds)."""


def _fail(path: str, problem: str) -> typing.NoReturn:
    raise ConfigError(f"config key '{path}': {problem}")


def _check(condition: bool, path: str, problem: str) -> None:
    if not condition:
        _fail(path, problem)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, Section):
        return "a mapping"
    if origin is not None:
        return {list: "a list", dict: "a mapping"}.get(origin, str(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form.

    KFP passes STRUCT parameters through protobuf, which turns every integer into a float (``10`` arrives
    as ``10.0``), so integral floats are accepted where an integer is expected.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        _fail(path, f"expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        _check(value is None, path, f"expected null, got {value!r}")
        return None
    if isinstance(tp, type) and issubclass(tp, Section):
        _check(isinstance(value, Mapping), path, f"expected a mapping, got {value!r}")
        return tp.from_dict(value, path)
    if origin is list:
        _check(isinstance(value, list), path, f"expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _check(isinstance(value, Mapping), path, f"expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, f"{path}.{k}"): _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        _check(isinstance(value, bool), path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _check(isinstance(value, int) and not isinstance(value, bool), path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool), path, f"expected a number, got {value!r}"
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str), path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config.py cannot check annotation {tp!r} at {path}")  # a bug in this module


@dataclass(frozen=True)
class Section:
    """A validated, immutable config section. Subclasses add fields and a ``validate`` method."""

    @classmethod
    def from_dict(cls: type[S], raw: Mapping[str, Any] | None, path: str = "") -> S:
        raw = dict(raw or {})
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in raw if k not in names]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(names)}"
            _fail(_join(path, key), f"unknown key; {hint}")
        values = {k: _coerce(v, hints[k], _join(path, k)) for k, v in raw.items()}
        section = cls(**values)
        section.validate(path)
        return section

    def validate(self, path: str) -> None:
        """Range and consistency checks; raise through ``_fail`` with the key's full path."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the images are and how to read their classes and splits (the ingest stage)."""

    uri: str = ""
    """Local folder, ``s3://bucket/prefix``, or ``http(s)://`` URL of a .zip / .tar.gz archive."""
    class_map: dict[str, str] | str = field(default_factory=dict)
    """Folder name -> class name, inline or as a path/URI of a YAML mapping ('' or {} for none). Folders
    it does not name fall back to ``class_separator``."""
    class_separator: str = "_"
    """The class is the folder name up to the first occurrence of this string ('' = whole name)."""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    """Fractions for splits that the data set does not have (seeded, stratified, group-disjoint)."""
    seed: int = 42
    group_pattern: str = DEFAULT_GROUP_PATTERN
    """Regular expression matched against each file name without its extension (the whole name); its group
    ``scan`` (or its first group) is the scan id. Files of one class with one scan id are one group, which
    splits made by ingest never divide. The default turns ``000109 (2).png`` and ``6 - Copy (2) - Copy.png``
    into ``000109`` and ``6``. '' = no grouping by name."""
    near_duplicates: bool = True
    """Find near-duplicates by perceptual hash: they join one group, and those of training images are removed
    from given validation and test splits (and reported)."""
    near_duplicate_bits: int = 4
    """Two images are near-duplicates when their 64-bit perceptual hashes (pHash) differ in at most this many
    bits. 4 was chosen by looking at the chest CT pairs around it (docs/benchmarks.md, "Near-duplicates")."""
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    """Most bytes a .zip/.tar(.gz) may expand to, summed over its members, checked before extracting."""
    max_archive_members: int = 200_000
    """Most members (files and folders) an archive may hold."""
    max_archive_ratio: float = 100.0
    """Most an archive may expand, as expanded bytes over the archive's own size: images barely compress
    (PNG, JPEG: about 1x; uncompressed DICOM: 2-4x), a decompression bomb does by hundreds."""
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    """Most bytes of one file, in an archive or a folder, checked before it is read."""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Most pixels (width x height) of one image, read from its header before any pixel is decoded; the same
    default as ``radpipe serve --max_image_pixels`` and ``radpipe predict --max-image-pixels``."""
    download_timeout_seconds: float = 3600.0
    """Deadline of each download (``http(s)://`` and ``s3://``) from its first byte requested to its last
    received: a server that trickles bytes fails the run with this key's name instead of hanging it."""

    def validate(self, path: str) -> None:
        for key in ("max_archive_bytes", "max_archive_members", "max_file_bytes", "max_image_pixels"):
            value = getattr(self, key)
            _check(value >= 1, _join(path, key), f"must be a positive integer, got {value}")
        _check(
            self.max_archive_ratio >= 1.0,
            _join(path, "max_archive_ratio"),
            f"must be >= 1 (expanded bytes over archive bytes), got {self.max_archive_ratio}",
        )
        _check(
            self.download_timeout_seconds > 0,
            _join(path, "download_timeout_seconds"),
            f"must be > 0 seconds, got {self.download_timeout_seconds}",
        )
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            _check(0.0 < value < 0.5, _join(path, key), f"must be between 0 and 0.5, got {value}")
        if self.group_pattern:
            try:
                pattern = re.compile(self.group_pattern)
            except re.error as exc:
                _fail(_join(path, "group_pattern"), f"not a valid regular expression ({exc}); '' turns grouping off")
            _check(
                pattern.groups >= 1,
                _join(path, "group_pattern"),
                "needs a capturing group for the scan id, e.g. '(?P<scan>.+?)(?: \\(\\d+\\))*'",
            )
        _check(
            0 <= self.near_duplicate_bits <= 16,
            _join(path, "near_duplicate_bits"),
            f"must be 0..16 bits of 64 (0 = identical hashes only), got {self.near_duplicate_bits}",
        )


@dataclass(frozen=True)
class ModelConfig(Section):
    """The backbone and head (the prepare-base stage)."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    """``imagenet`` (Keras cache or download), ``none`` (random; must be explicit), or a path / s3:// /
    https:// URI of a weights file for the backbone without its top."""
    image_size: int = 560
    """Square input size in pixels: the largest scale the backbone sees (docs/benchmarks.md, "Resolution"
    and "Honest validation")."""
    scales: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8, 1.0])
    """Fractions of ``image_size`` at which the backbone sees each image (224, 336, 448 and 560 px by
    default); the pooled features of every scale are concatenated for the head. ``[1.0]``: one scale."""
    mirror: bool = True
    """Average each scale's pooled features over the image and its left-right mirror image (one more
    backbone pass per scale), so the head does not depend on the side a finding is on."""
    intermediate_features: bool = True
    """Pool one earlier activation of the backbone beside its last (MobileNetV2's ``block_13_expand_relu``,
    at 1/16 of the input; each backbone's in ``radpipe/backbones.py``) into every scale's features: finer
    texture for the head, at no extra backbone pass. Chosen by grouped cross-validation
    (docs/benchmarks.md, "What the head learns from")."""
    dropout: float = 0.3
    dense_units: int = 0
    """Units of an extra hidden layer in the head; 0 = linear head on pooled features."""
    framing: str = "trim-pad"
    """How an image of any shape becomes the model's square: 'trim-pad' (dark border cut away, then resized
    to fit with the aspect ratio kept and padded with black), 'pad' (no trimming) or 'stretch' (resized to
    the square, as radpipe did before). Recorded with the model, so predict and serve frame images the same
    way. Chosen by grouped cross-validation: docs/benchmarks.md, "Honest validation"."""
    intensity: str = "autocontrast"
    """What is done to each framed image's grey levels: 'autocontrast' (stretched so its darkest pixel is
    black and its brightest 1 % white) or 'none' (as exported). PNG/JPEG exports carry no Hounsfield units
    and differ in brightness between exports of one data set; with 'none' the model's answers move with
    that brightness (docs/benchmarks.md, "Grey levels"). Recorded with the model, so predict and serve do
    the same. DICOM input is windowed first, then adjusted; a data set of DICOM alone, whose Hounsfield units
    agree between scanners, can keep them with 'none'."""
    window: str | list[str] = "lung"
    """How DICOM input becomes pixels: a named window (``lung`` -600/1500, ``mediastinum`` 40/400, ``bone``
    400/1800) or ``CENTRE/WIDTH`` in modality units (HU for CT), as grey; or a list of three, one per colour
    channel. Recorded with the model (its preprocessing), so predict and serve window DICOM the same way.
    PNG/JPEG input is not affected."""

    def pixel_scales(self) -> list[int]:
        """``scales`` in pixels, smallest first, without repeats."""
        return scale_pixels(self.image_size, self.scales)

    def validate(self, path: str) -> None:
        _check(
            self.backbone in BACKBONES,
            _join(path, "backbone"),
            f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}",
        )
        _check(self.weights != "", _join(path, "weights"), "must be 'imagenet', 'none' or a weights file URI")
        _check(32 <= self.image_size <= 1024, _join(path, "image_size"), f"must be 32..1024, got {self.image_size}")
        _check(0.0 <= self.dropout < 1.0, _join(path, "dropout"), f"must be in [0, 1), got {self.dropout}")
        _check(self.dense_units >= 0, _join(path, "dense_units"), f"must be >= 0, got {self.dense_units}")
        try:
            dicom.parse_windows(self.window)
        except ValueError as exc:
            _fail(_join(path, "window"), str(exc))
        _check(
            self.framing in FRAMINGS,
            _join(path, "framing"),
            f"must be one of {', '.join(FRAMINGS)}, got {self.framing!r}",
        )
        _check(
            self.intensity in INTENSITIES,
            _join(path, "intensity"),
            f"must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}",
        )
        _check(bool(self.scales), _join(path, "scales"), "must list at least one fraction of image_size, e.g. [1.0]")
        for i, scale in enumerate(self.scales):
            _check(0.0 < scale <= 1.0, _join(path, f"scales[{i}]"), f"must be in (0, 1], got {scale}")
        smallest = min(self.pixel_scales())
        _check(smallest >= 32, _join(path, "scales"), f"the smallest scale is {smallest} px; backbones need >= 32")


def scale_pixels(image_size: int, scales: list[float]) -> list[int]:
    """Fractions of ``image_size`` as pixel sizes, smallest first, without repeats."""
    return sorted({max(1, round(image_size * scale)) for scale in scales})


@dataclass(frozen=True)
class AugmentationConfig(Section):
    """Random transforms applied to training images only (Keras preprocessing layers)."""

    flip: bool = True
    rotation: float = 0.05
    """Fraction of a full turn (0.05 = +-18 degrees)."""
    zoom: float = 0.1
    translation: float = 0.05
    contrast: float = 0.1

    def transforms(self) -> bool:
        """Whether any transform is on."""
        return self.flip or any((self.rotation, self.zoom, self.translation, self.contrast))

    def validate(self, path: str) -> None:
        for key in ("rotation", "zoom", "translation", "contrast"):
            value = getattr(self, key)
            _check(0.0 <= value <= 0.5, _join(path, key), f"must be between 0 and 0.5, got {value}")


@dataclass(frozen=True)
class TrainConfig(Section):
    """The train stage: the head on a frozen backbone, then optional fine-tuning of the backbone's top layers."""

    epochs: int = 100
    """Epochs of the frozen-backbone phase (cheap with head_on_features: seconds, not minutes)."""
    batch_size: int = 32
    learning_rate: float = 1e-3
    """Learning rate of the frozen-backbone phase."""
    lr_schedule: str = "cosine"
    """'cosine' (decay to 0 over each end-to-end phase) or 'constant'."""
    label_smoothing: float = 0.1
    class_weights: bool = True
    early_stopping_patience: int = 10
    """Stop a phase after this many epochs without a better validation loss (0 = never stop early)."""
    head: str = "logistic"
    """How the head is fitted on the frozen backbone's features: 'logistic' (scikit-learn's multinomial
    logistic regression on standardised features, its L2 strength chosen among ``head_c`` as
    ``head_selection`` says; deterministic) or 'keras' (gradient descent for ``epochs`` with early stopping)."""
    head_c: list[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3])
    """Inverse L2 strengths the 'logistic' head tries (scikit-learn's ``C``)."""
    head_selection: str = "grouped-cv"
    """How the 'logistic' head chooses among ``head_c``: 'grouped-cv' (out-of-fold log loss of
    ``head_cv_folds`` stratified folds over the training split, no group of images on both sides of a fold;
    the validation split stays untouched for evaluate-and-register) or 'validation' (log loss on the
    validation split, which then also chose the head)."""
    head_cv_folds: int = 5
    """Folds of 'grouped-cv' (at most the number of training groups)."""
    head_on_features: bool = True
    """Train the frozen-phase head on backbone features computed once (see components/train/features.py);
    false trains it end to end with augmentation, every epoch a full forward pass."""
    augmented_copies: int = 1
    """With ``head_on_features``: fixed random copies of every training and validation image
    (``augmentation``'s transforms) whose backbone features join the head's fit; grouped cross-validation
    fits each fold on its own images' copies only and scores originals. One copy costs one more backbone
    pass; it lowered the grouped-CV log loss on chest CT from 0.341 to 0.288 (docs/benchmarks.md,
    "Honest validation"). 0 = none."""
    feature_cache: str = ""
    """Folder or s3:// prefix where backbone features are cached across candidates and runs ('' = none;
    local runs default to .radpipe/cache)."""
    fine_tune_layers: int = 0
    """Unfreeze this many layers at the top of the backbone after the frozen phase (0 = no fine-tuning;
    at least the backbone's depth, e.g. 154 for MobileNetV2, = all of it; BatchNorm stays frozen)."""
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-4
    fine_tune_warmup_epochs: int = 2
    """Linear learning-rate warm-up at the start of fine-tuning (with lr_schedule 'cosine')."""
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    """Applied in the fine-tuning phase (and the frozen phase when head_on_features is false), and to make
    ``augmented_copies``."""
    seed: int = 42

    def validate(self, path: str) -> None:
        _check(self.epochs >= 1, _join(path, "epochs"), f"must be >= 1, got {self.epochs}")
        _check(1 <= self.batch_size <= 1024, _join(path, "batch_size"), f"must be 1..1024, got {self.batch_size}")
        for key in ("learning_rate", "fine_tune_learning_rate"):
            value = getattr(self, key)
            _check(0.0 < value < 1.0, _join(path, key), f"must be in (0, 1), got {value}")
        _check(0.0 <= self.label_smoothing < 0.5, _join(path, "label_smoothing"), "must be in [0, 0.5)")
        _check(self.early_stopping_patience >= 0, _join(path, "early_stopping_patience"), "must be >= 0")
        _check(
            0 <= self.augmented_copies <= 10,
            _join(path, "augmented_copies"),
            f"must be 0 (none) to 10, got {self.augmented_copies}",
        )
        _check(
            not (self.augmented_copies and self.head_on_features) or self.augmentation.transforms(),
            _join(path, "augmented_copies"),
            "copies need a transform, but every one in train.augmentation is off: turn one on, or set "
            "augmented_copies to 0",
        )
        _check(
            self.lr_schedule in ("cosine", "constant"),
            _join(path, "lr_schedule"),
            f"must be 'cosine' or 'constant', got {self.lr_schedule!r}",
        )
        _check(
            self.head in ("logistic", "keras"), _join(path, "head"), f"must be 'logistic' or 'keras', got {self.head!r}"
        )
        _check(
            self.head == "keras" or self.head_on_features,
            _join(path, "head"),
            "'logistic' fits on cached backbone features: set head_on_features true, or head 'keras'",
        )
        _check(bool(self.head_c), _join(path, "head_c"), "must list at least one value")
        _check(
            self.head_selection in ("grouped-cv", "validation"),
            _join(path, "head_selection"),
            f"must be 'grouped-cv' or 'validation', got {self.head_selection!r}",
        )
        _check(2 <= self.head_cv_folds <= 20, _join(path, "head_cv_folds"), f"must be 2..20, got {self.head_cv_folds}")
        for i, c in enumerate(self.head_c):
            _check(c > 0, _join(path, f"head_c[{i}]"), f"must be > 0, got {c}")
        _check(self.fine_tune_layers >= 0, _join(path, "fine_tune_layers"), "must be >= 0")
        _check(self.fine_tune_epochs >= 0, _join(path, "fine_tune_epochs"), "must be >= 0")
        _check(self.fine_tune_warmup_epochs >= 0, _join(path, "fine_tune_warmup_epochs"), "must be >= 0")
        _check(
            (self.fine_tune_layers == 0) == (self.fine_tune_epochs == 0),
            _join(path, "fine_tune_epochs"),
            "set fine_tune_layers and fine_tune_epochs together (both 0 turns fine-tuning off)",
        )


SELECT_BY = ("val_loss", "val_macro_f1", "val_accuracy")
"""Validation metrics ``evaluate.select_by`` may name; the others break ties, in this order."""


@dataclass(frozen=True)
class EvaluateConfig(Section):
    """The evaluate-and-register stage's scoring, plots and confidence intervals."""

    batch_size: int = 32
    bootstrap_samples: int = 1000
    """Resamples of the test split behind the confidence intervals of the model card (0 = no intervals)."""
    confidence_level: float = 0.95
    calibration_bins: int = 10
    """Equal-width confidence bins of the reliability diagram and the expected calibration error."""
    gradcam_per_class: int = 2
    """Test images per class in the Grad-CAM grid, for each outcome (correct, wrong); 0 = no grid."""
    seed: int = 0
    """Seed of the bootstrap resampling (intervals are reproducible)."""
    select_by: str = "val_loss"
    """How candidates (and an ensemble) are ranked on validation: ``val_loss`` (log loss), ``val_macro_f1``
    or ``val_accuracy``; the others break ties. Log loss by default: on tens of validation images, with
    a class of a few, accuracy and macro-F1 move in steps of whole images and favour luck; the log loss
    uses every probability, and it is what picks each candidate's kept epoch."""
    calibrate: bool = True
    """Fit a temperature on the validation split (log loss) and bake it into the registered model, so its
    probabilities mean what they say; needs 30 validation images, else the model is registered as is
    and its record says why."""
    refit: bool = True
    """Once validation has chosen the candidate and fitted its temperature, register it with its logistic
    head refitted on train + validation (the same ``C``, fitted by train): more scans to learn from, as
    scikit-learn's grid search refits on all it searched. The record's validation scores stay the
    train-only fit's. Candidates without such a head (fine-tuned, a Keras head) are registered as trained."""
    ensemble: int = 1
    """Average the N best candidates on validation into one model, registered instead of the best single
    candidate if it scores at least as well on validation; 1 = the best single candidate, no averaging."""

    def validate(self, path: str) -> None:
        _check(self.batch_size >= 1, _join(path, "batch_size"), "must be >= 1")
        _check(
            self.select_by in SELECT_BY,
            _join(path, "select_by"),
            f"must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}",
        )
        _check(1 <= self.ensemble <= 10, _join(path, "ensemble"), f"must be 1 (off) to 10, got {self.ensemble}")
        _check(
            self.bootstrap_samples == 0 or 100 <= self.bootstrap_samples <= 100_000,
            _join(path, "bootstrap_samples"),
            f"must be 0 (off) or 100..100000, got {self.bootstrap_samples}",
        )
        _check(
            0.5 <= self.confidence_level < 1.0,
            _join(path, "confidence_level"),
            f"must be in [0.5, 1), e.g. 0.95, got {self.confidence_level}",
        )
        _check(
            2 <= self.calibration_bins <= 50,
            _join(path, "calibration_bins"),
            f"must be 2..50, got {self.calibration_bins}",
        )
        _check(
            0 <= self.gradcam_per_class <= 8,
            _join(path, "gradcam_per_class"),
            f"must be 0..8, got {self.gradcam_per_class}",
        )


GATE_METRICS = ("macro_f1", "accuracy", "macro_recall", "macro_precision", "roc_auc_macro_ovr")
CHAMPION_ERROR_POLICIES = ("block", "ignore")


@dataclass(frozen=True)
class GateConfig(Section):
    """When a newly registered version becomes the challenger (see docs/registry.md).

    The version is registered either way; the gate only decides whether the challenger alias moves to it."""

    min_macro_f1: float = 0.0
    """Lowest acceptable test macro-F1 (0 = no threshold)."""
    min_class_recall: float = 0.0
    """Lowest acceptable test recall of every class, i.e. sensitivity per class (0 = no threshold)."""
    champion_metric: str = "macro_f1"
    """Test metric on which the candidate is compared with the champion, both scored on the same test split."""
    champion_margin: float = 0.01
    """How much worse than the champion the candidate may be on ``champion_metric`` and still pass."""
    on_champion_error: str = "block"
    """The champion exists but cannot be re-scored (cannot be loaded, other classes): ``block`` fails the gate,
    ``ignore`` judges on the thresholds alone. Either way the reason is recorded."""

    def validate(self, path: str) -> None:
        for key in ("min_macro_f1", "min_class_recall", "champion_margin"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, _join(path, key), f"must be between 0 and 1, got {value}")
        _check(
            self.champion_metric in GATE_METRICS,
            _join(path, "champion_metric"),
            f"unknown metric {self.champion_metric!r}; choose one of {', '.join(GATE_METRICS)}",
        )
        _check(
            self.on_champion_error in CHAMPION_ERROR_POLICIES,
            _join(path, "on_champion_error"),
            f"must be one of {', '.join(CHAMPION_ERROR_POLICIES)}, got {self.on_champion_error!r}",
        )


@dataclass(frozen=True)
class RegisterConfig(Section):
    """Where the chosen model goes in the MLflow Model Registry, and which aliases the pipeline moves."""

    model_name: str = "chest-ct"
    champion_alias: str = "champion"
    """The alias serving uses (``models:/NAME@champion``). Only the first version that passes the gate gets it
    automatically; after that it moves by ``radpipe promote``. Teams used to stages may call it ``production``."""
    challenger_alias: str = "challenger"
    """Moves to the newest version that passed the gate (``staging``, in stage terms)."""
    gate: GateConfig = field(default_factory=GateConfig)

    def validate(self, path: str) -> None:
        _check(bool(self.model_name.strip()), _join(path, "model_name"), "must not be empty")
        _check(
            not any(c in self.model_name for c in "@/'\"\\"),
            _join(path, "model_name"),
            "must not contain '@' or '/' (nor quotes or backslashes)",
        )
        for key in ("champion_alias", "challenger_alias"):
            problem = alias_problem(getattr(self, key))
            _check(not problem, _join(path, key), problem)
        _check(
            self.champion_alias != self.challenger_alias,
            _join(path, "challenger_alias"),
            "must differ from register.champion_alias",
        )


@dataclass(frozen=True)
class TrackingConfig(Section):
    """MLflow tracking. An empty ``uri`` means: ``MLFLOW_TRACKING_URI`` if set, else the embedded sqlite
    store under ``.radpipe/`` (local runs only)."""

    uri: str = ""
    experiment: str = "radpipe"
    retry_budget_seconds: float = 60.0
    """How long one MLflow call may retry an unreachable or failing server before the stage fails (MLflow's
    own default is about 4 minutes per call); ``radpipe run`` also checks the server answers before any
    stage runs. Sets MLFLOW_HTTP_REQUEST_MAX_RETRIES/_TIMEOUT/_BACKOFF_* for the tasks it starts."""

    def validate(self, path: str) -> None:
        _check(bool(self.experiment.strip()), _join(path, "experiment"), "must not be empty")
        _check(
            1.0 <= self.retry_budget_seconds <= 3600.0,
            _join(path, "retry_budget_seconds"),
            f"must be 1..3600 seconds, got {self.retry_budget_seconds}",
        )


@dataclass(frozen=True)
class CandidateConfig(Section):
    """One candidate configuration: overrides of the ``model`` and ``train`` sections."""

    name: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchConfig(Section):
    """Candidates trained in parallel; the best on the validation split is registered.

    An empty list trains the ``model``/``train`` sections as they are (one candidate)."""

    candidates: list[CandidateConfig] = field(default_factory=list)
    parallelism: int = 1
    """Candidates trained at once: subprocesses with kfp.local (keep 1 on a laptop), pods on a cluster
    (0 = no limit)."""

    def validate(self, path: str) -> None:
        _check(self.parallelism >= 0, _join(path, "parallelism"), f"must be >= 0, got {self.parallelism}")
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if n and names.count(n) > 1})
        _check(not dupes, _join(path, "candidates"), f"candidate names must be unique, repeated: {dupes}")


@dataclass(frozen=True)
class Config(Section):
    """A whole radpipe run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def validate(self, path: str) -> None:
        # Each candidate must make valid model/train sections on top of this config.
        for i, candidate in enumerate(self.search.candidates):
            resolve_candidate(self.model, self.train, candidate, f"search.candidates[{i}]")

    def pipeline_arguments(self) -> dict[str, Any]:
        """The pipeline's parameters (``pipelines/training_pipeline.py``): one dict per section, and the
        candidates. What kfp.local runs with, the compiled YAML's defaults and a cluster run's arguments."""
        return {
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "evaluate": self.evaluate.to_dict(),
            "register": self.register.to_dict(),
            "tracking": self.tracking.to_dict(),
            "candidates": self.candidate_list(),
        }

    def candidate_list(self) -> list[dict[str, Any]]:
        """The pipeline's ``candidates`` parameter: named candidates, or the base config as one."""
        if not self.search.candidates:
            return [CandidateConfig(name="default").to_dict()]
        return [c.replace(name=c.name or f"candidate-{i}").to_dict() for i, c in enumerate(self.search.candidates)]


def resolve_candidate(
    model: ModelConfig, train: TrainConfig, candidate: CandidateConfig | Mapping[str, Any], path: str = "candidate"
) -> tuple[ModelConfig, TrainConfig]:
    """The ``model`` and ``train`` sections one candidate trains with."""
    if not isinstance(candidate, CandidateConfig):
        candidate = CandidateConfig.from_dict(candidate, path)
    return (
        ModelConfig.from_dict(deep_merge(model.to_dict(), candidate.model), f"{path}.model"),
        TrainConfig.from_dict(deep_merge(train.to_dict(), candidate.train), f"{path}.train"),
    )


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``5e-5`` as a number as YAML 1.2 does (YAML 1.1 wants a dot, ``5.0e-5``,
    and leaves ``5e-5`` a string; learning rates are written the short way)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=5`` -> (['train', 'epochs'], 5). Values are YAML, so ``[1, 2]`` and ``null`` work."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.problem})") from None
    return [part.strip() for part in key.split(".")], value


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults <- YAML file <- ``--set`` overrides, validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a YAML file")
        try:
            loaded = _load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, e.g. 'train: {{epochs: 5}}'")
        raw = dict(loaded)
    for text in overrides:
        keys, value = parse_override(text)
        target = raw
        for key in keys[:-1]:
            existing = target.get(key)
            if existing is None:
                existing = target[key] = {}
            if not isinstance(existing, dict):
                raise ConfigError(f"--set {text!r}: '{key}' is not a section")
            target = existing
        target[keys[-1]] = value
    return Config.from_dict(raw)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)

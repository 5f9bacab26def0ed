"""Everything the model card and the HTML report say about one registered version, gathered once.

The card (Markdown) and the report (HTML) are two views of the same facts; keeping the facts in one
object means they cannot disagree.
"""

from __future__ import annotations

import datetime
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from radpipe import __version__
from radpipe.config import GateConfig
from radpipe.json_safe import json_safe
from radpipe.model_uri import version_uri
from radpipe.modelspec import ModelSpec

if TYPE_CHECKING:  # the stage's results, read here, never computed: no import of the stage at run time
    from radpipe.components.evaluate_and_register.champion import ChampionScore
    from radpipe.components.evaluate_and_register.evaluate import Evaluation
    from radpipe.components.evaluate_and_register.gate import Decision

NOT_FOR_CLINICAL_USE = (
    "**Not for clinical use.** This model is research software. It has not been cleared or approved by any "
    "regulator (e.g. FDA, CE marking under the EU MDR) and must not be used to diagnose, treat, triage or "
    "otherwise decide about patients."
)

METRIC_NAMES = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "macro_precision": "Macro precision",
    "macro_recall": "Macro recall (mean sensitivity)",
    "roc_auc_macro_ovr": "ROC AUC (macro, one-vs-rest)",
    "ece": "Expected calibration error (lower is better)",
}
"""The overall test metrics the card and the report show, in order, as they name them."""


@dataclass(frozen=True)
class DataSummary:
    """The data set the candidate was trained and tested on (from the ingest manifest)."""

    fingerprint: str
    source: str
    counts: dict[str, dict[str, int]]
    created_splits: list[str] = field(default_factory=list)
    removed_duplicates: int = 0
    removed_conflicting: int = 0
    unreadable: int = 0
    removed_near_duplicates: int = 0
    near_duplicates: dict[str, Any] = field(default_factory=dict)
    """The ingest report's ``near_duplicates``: hash, threshold, pairs found across the given splits."""
    grouping: dict[str, Any] = field(default_factory=dict)
    """The ingest report's ``grouping``: what grouped images, how many groups, how many span splits."""
    removed_same_patient: int = 0
    dicom: dict[str, Any] = field(default_factory=dict)
    """The ingest report's ``dicom``: counts of DICOM files by modality, scanner model and group key."""

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], fingerprint: str) -> DataSummary:
        report = manifest.get("report", {})
        return cls(
            fingerprint=fingerprint or str(manifest.get("fingerprint", "")),
            source=safe_source(str(manifest.get("source", ""))),
            counts={s: {c: int(n) for c, n in per.items()} for s, per in manifest.get("counts", {}).items()},
            created_splits=list(report.get("created_splits", [])),
            removed_duplicates=len(report.get("removed_cross_split_duplicates", []))
            + len(report.get("removed_within_split_duplicates", [])),
            removed_conflicting=len(report.get("removed_conflicting_labels", [])),
            unreadable=len(report.get("unreadable", [])),
            removed_near_duplicates=len(report.get("removed_near_duplicates", [])),
            near_duplicates=dict(report.get("near_duplicates") or {}),
            grouping=dict(report.get("grouping") or {}),
            removed_same_patient=len(report.get("removed_same_patient", [])),
            dicom=dict(report.get("dicom") or {}),
        )


@dataclass(frozen=True)
class CandidateSummary:
    """One trained candidate as validation judged it: a row of the card's candidate table.

    ``recipe`` is everything the candidate was built and trained with except ``train.seed``, so candidates
    that share it differ by their seed alone, and their spread is the seed's effect.
    """

    name: str
    seed: int | None
    recipe: str
    val_metrics: dict[str, float]

    @classmethod
    def of(cls, name: str, spec: ModelSpec) -> CandidateSummary:
        extra = spec.extra
        train = dict(extra.get("train_config") or {})
        seed = train.pop("seed", None)
        recipe = json.dumps({"model": extra.get("model_config"), "train": train}, sort_keys=True, default=str)
        return cls(name, None if seed is None else int(seed), recipe, dict(extra.get("val_metrics") or {}))


@dataclass(frozen=True)
class SeedSpread:
    """Candidates of one recipe trained with different seeds: how far apart validation put them."""

    names: list[str]
    seeds: list[int]
    ranges: dict[str, tuple[float, float]]
    """``val_accuracy``, ``val_macro_f1``, ``val_loss``: (lowest, highest) over the seeds."""


def seed_spreads(candidates: list[CandidateSummary]) -> list[SeedSpread]:
    """One :class:`SeedSpread` per recipe that ran with two or more seeds."""
    by_recipe: dict[str, list[CandidateSummary]] = {}
    for c in candidates:
        if c.seed is not None:
            by_recipe.setdefault(c.recipe, []).append(c)
    spreads = []
    for group in by_recipe.values():
        if len({c.seed for c in group}) < 2:
            continue
        ranges = {}
        for key in ("val_accuracy", "val_macro_f1", "val_loss"):
            values = [c.val_metrics[key] for c in group if json_safe(c.val_metrics.get(key)) is not None]
            if values:
                ranges[key] = (min(values), max(values))
        spreads.append(SeedSpread([c.name for c in group], [int(c.seed) for c in group], ranges))  # type: ignore[arg-type]
    return spreads


def safe_source(uri: str) -> str:
    """A data URI fit to print: no credentials, no query string (pre-signed URLs carry tokens there)."""
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.scheme or len(parsed.scheme) == 1:
        return uri
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))


@dataclass
class Findings:
    model_name: str
    version: str
    candidate: str
    run_id: str
    parent_run_id: str
    spec: ModelSpec
    evaluation: Evaluation
    data: DataSummary
    decision: Decision
    gate: GateConfig
    champion: ChampionScore
    challenger_alias: str
    candidates: list[CandidateSummary] = field(default_factory=list)
    """Every candidate the search trained (one without a search), as validation scored them."""
    created: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    )
    radpipe_version: str = __version__

    @property
    def uri(self) -> str:
        return version_uri(self.model_name, self.version)

    @property
    def test_images(self) -> int:
        return int(self.evaluation.metrics.get("images", len(self.evaluation.labels)))

    @property
    def interval_label(self) -> str:
        """The column heading of the confidence intervals: ``95% CI``."""
        intervals = self.evaluation.intervals
        return f"{intervals.level:.0%} CI" if intervals else "CI"

    def overall_rows(self) -> list[tuple[str, str, str]]:
        """(metric, value, interval) of each of :data:`METRIC_NAMES` the evaluation has, formatted."""
        ev, intervals = self.evaluation, self.evaluation.intervals
        return [
            (label, fmt(ev.metrics[key]), fmt_interval(intervals.overall.get(key) if intervals else None))
            for key, label in METRIC_NAMES.items()
            if key in ev.metrics
        ]

    def per_class_rows(self) -> list[tuple[str, int, list[tuple[str, str]], str]]:
        """(class, test images, (value, interval) of precision, recall and F1, AUC) per class, formatted."""
        ev, intervals = self.evaluation, self.evaluation.intervals
        rows = []
        for name in ev.class_names:
            m = ev.per_class[name]
            ci = intervals.per_class.get(name, {}) if intervals else {}
            scores = [(fmt(m[key]), fmt_interval(ci.get(key))) for key in ("precision", "recall", "f1")]
            rows.append((name, int(m["support"]), scores, fmt(m.get("roc_auc"))))
        return rows

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, candidate, champion) on the same test split, for the report and the card."""
        if self.champion.evaluation is None:
            return []
        ours, theirs = self.evaluation, self.champion.evaluation
        rows: list[tuple[str, float | None, float | None]] = [
            (key, ours.metrics.get(key), theirs.metrics.get(key))
            for key in ("accuracy", "macro_f1", "roc_auc_macro_ovr", "ece")
        ]
        for name in ours.class_names:
            rows.append(
                (
                    f"recall {name}",
                    ours.per_class[name]["recall"],
                    theirs.per_class.get(name, {}).get("recall"),
                )
            )
        return rows

    def limits(self) -> list[str]:
        """Known limits, from what this evaluation can and cannot show."""
        notes = []
        n = self.test_images
        if n < 100:
            notes.append(
                f"The test split has only {n} images: every metric above is uncertain (see the confidence "
                "intervals); differences of a few points between models are noise."
            )
        thin = [c for c, m in self.evaluation.per_class.items() if 0 < m["support"] < 30]
        if thin:
            notes.append(f"Fewer than 30 test images for {', '.join(thin)}: their per-class metrics are rough.")
        absent = [c for c, m in self.evaluation.per_class.items() if m["support"] == 0]
        if absent:
            notes.append(f"No test images at all for {', '.join(absent)}: its performance is unknown.")
        train = self.data.counts.get("train", {})
        if train and min(train.values()) > 0 and max(train.values()) / min(train.values()) >= 2:
            notes.append(
                "The training classes are imbalanced ("
                + ", ".join(f"{c} {n}" for c, n in train.items())
                + "); rarer classes tend to be recognised less reliably."
            )
        ece = self.evaluation.metrics.get("ece")
        if ece is not None and ece > 0.1:
            notes.append(
                f"Predicted probabilities are poorly calibrated (ECE {ece:.3f}): do not read them as the chance "
                "that an image shows the class."
            )
        if self.spec.weights == "none":
            notes.append("The backbone was trained from random weights (model.weights=none): a test or demo model.")
        notes += [
            "Test images come from the same source as the training images (a split of one data set): there is "
            "no external validation on other hospitals, scanners or protocols.",
            "The model classifies single 2D images (e.g. exported CT slices), not volumes, and knows only the "
            "classes above: an image of anything else still gets one of these labels.",
            "No subgroup analysis (age, sex, scanner, site): the data set carries no such labels.",
            "Grad-CAM heatmaps show which regions drove a prediction, coarsely; they are not segmentations and "
            "not an explanation a clinician can rely on.",
            "Burned-in annotations (patient details written into the pixels, as in screenshots and some secondary "
            "captures) are out of scope: radpipe keeps no DICOM header value but an allow-list of technical tags, "
            "and it does not look for text in the pixels. Do not train on or send images that carry them.",
        ]
        return notes


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric as the card and the report print it; an undefined one (None, NaN) as a dash."""
    if json_safe(value) is None:
        return "–"
    return f"{value:.{digits}f}"


def fmt_interval(interval: tuple[float, float] | None) -> str:
    """``low–high``; a dash when either bound is undefined."""
    if interval is None or None in json_safe(list(interval)):
        return "–"
    return f"{interval[0]:.3f}–{interval[1]:.3f}"

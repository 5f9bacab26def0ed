"""The evaluation plots: each a function returning a matplotlib Figure, and :func:`write_plots` to save them.

Figures are built on ``matplotlib.figure.Figure`` directly, never on pyplot's current figure: no global
state, nothing left open between calls. The confusion matrix, ROC and precision-recall curves are
scikit-learn's displays drawn onto those axes, so the curves are computed the way the metrics are. PNGs
are written atomically; the stage logs the same files to MLflow and embeds them in the HTML report.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from radpipe import storage
from radpipe.gradcam import overlay

if TYPE_CHECKING:  # the stage's results, drawn here, never computed: no import of the stage at run time
    from radpipe.components.evaluate_and_register.calibration import Reliability
    from radpipe.components.evaluate_and_register.evaluate import Evaluation
    from radpipe.components.evaluate_and_register.explain import GradcamSample

DPI = 110
SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def _colour(i: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_matrices(confusion: Sequence[Sequence[int]], class_names: list[str]) -> Figure:
    """Counts beside row-normalised rates (each row: how the images of one true class were classified)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(confusion, dtype=int)
    k = len(class_names)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = counts / counts.sum(axis=1, keepdims=True)
    side = max(3.6, 0.9 * k + 1.8)
    fig = Figure(figsize=(2 * side + 1.2, side), layout="constrained")
    labels = [_short(c) for c in class_names]
    for ax, values, title, fmt, top in (
        (fig.add_subplot(1, 2, 1), counts, "Confusion matrix (counts)", "d", max(int(counts.max(initial=0)), 1)),
        (fig.add_subplot(1, 2, 2), rates, "Row-normalised (recall on the diagonal)", ".0%", 1.0),
    ):
        shown = ConfusionMatrixDisplay(np.nan_to_num(values), display_labels=labels).plot(
            ax=ax, cmap="Blues", values_format=fmt, xticks_rotation=35, im_kw={"vmin": 0, "vmax": top}
        )
        for i, j in zip(*np.nonzero(np.isnan(np.asarray(values, dtype=float))), strict=True):
            shown.text_[i, j].set_text("–")  # a class with no test images has no rates
        ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.suptitle(f"Test split, {int(counts.sum())} images")
    return fig


def _one_vs_rest(evaluation: Evaluation) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, is-this-class, score) for classes that have both positives and negatives on test."""
    out = []
    for i in range(len(evaluation.class_names)):
        truth = (evaluation.labels == i).astype(int)
        if 0 < truth.sum() < len(truth):
            out.append((i, truth, evaluation.probabilities[:, i]))
    return out


def _per_class_curves(evaluation: Evaluation, display: Any, chance: dict[str, Any], title: str) -> tuple[Figure, Any]:
    """One scikit-learn ``display`` curve per class (one vs rest) on one axis, each class in its colour."""
    fig = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = fig.add_subplot()
    for i, truth, score in _one_vs_rest(evaluation):
        display.from_predictions(
            truth,
            score,
            name=f"{evaluation.class_names[i]} (n={int(truth.sum())})",
            ax=ax,
            curve_kwargs={"color": _colour(i), "lw": 2},
            plot_chance_level=True,
            chance_level_kw={"color": chance.get("color", _colour(i)), "ls": ":", "lw": 1, "label": chance["label"]},
        )
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def roc_curves(evaluation: Evaluation) -> Figure:
    """One-vs-rest ROC per class, with its AUC."""
    from sklearn.metrics import RocCurveDisplay

    chance = {"color": "grey", "label": "_chance"}  # the same diagonal for every class: drawn alike, unlabelled
    fig, ax = _per_class_curves(evaluation, RocCurveDisplay, chance, "ROC curves, one class vs rest (test split)")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pr_curves(evaluation: Evaluation) -> Figure:
    """Precision-recall per class with average precision; dotted lines are each class's prevalence."""
    from sklearn.metrics import PrecisionRecallDisplay

    title = "Precision-recall, one class vs rest (test split)"
    fig, ax = _per_class_curves(evaluation, PrecisionRecallDisplay, {"label": "_prevalence"}, title)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.05), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def reliability_diagram(reliability: Reliability) -> Figure:
    """Accuracy against confidence per bin; the gap to the diagonal is miscalibration."""
    fig = Figure(figsize=(6.2, 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    edges = reliability.edges
    width = np.diff(edges)
    filled = reliability.counts > 0
    centres = edges[:-1] + width / 2
    top.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    top.bar(
        edges[:-1][filled],
        reliability.accuracy[filled],
        width=width[filled],
        align="edge",
        color="#4c72b0",
        edgecolor="white",
        label="accuracy",
    )
    gap_low = np.minimum(reliability.accuracy, reliability.confidence)[filled]
    gap = np.abs(reliability.accuracy - reliability.confidence)[filled]
    top.bar(
        edges[:-1][filled],
        gap,
        bottom=gap_low,
        width=width[filled],
        align="edge",
        color="#c44e52",
        alpha=0.35,
        hatch="//",
        edgecolor="#c44e52",
        label="gap to confidence",
    )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    top.set_title(f"Reliability diagram (test split), ECE = {reliability.ece:.3f}")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centres, reliability.counts, width=width * 0.9, color="#8c8c8c")
    bottom.set(xlabel="confidence of the predicted class", ylabel="images")
    return fig


def training_curves(history: list[Mapping[str, Any]], best_epoch: int | None = None) -> Figure:
    """Loss and accuracy per epoch, train against validation; the fine-tuning start and the kept epoch marked."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in history]
    tuned = [int(r["epoch"]) for r in history if r.get("phase") == "fine-tune"]
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        for prefix, style, label in (("", "-", "train"), ("val_", "--", "validation")):
            values = [float(r.get(prefix + key, np.nan)) for r in history]
            ax.plot(epochs, values, style, marker="o", ms=3, lw=2, label=label)
        if tuned:
            ax.axvline(tuned[0] - 0.5, color="grey", ls=":", lw=1)
            ax.text(tuned[0] - 0.4, 0.98, " fine-tuning", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        if best_epoch:
            ax.axvline(best_epoch, color="#55a868", lw=1)
            last = best_epoch >= max(epochs)
            ax.text(
                best_epoch,
                0.02,
                "kept " if last else " kept",
                ha="right" if last else "left",
                transform=ax.get_xaxis_transform(),
                color="#55a868",
                fontsize=8,
            )
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Training curves: train and validation per epoch")
    return fig


def class_distribution(counts: Mapping[str, Mapping[str, int]], class_names: list[str]) -> Figure:
    """Images per class in each split."""
    splits = [s for s in ("train", "val", "test") if s in counts]
    k = len(class_names)
    fig = Figure(figsize=(max(6.0, 1.3 * k + 2.5), 4.4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    for j, split in enumerate(splits):
        values = [int(counts[split].get(c, 0)) for c in class_names]
        x = np.arange(k) + (j - (len(splits) - 1) / 2) * width
        bars = ax.bar(x, values, width, label=f"{split} ({sum(values)})", color=SPLIT_COLOURS.get(split))
        ax.bar_label(bars, fontsize=8, padding=1)
    ax.set_xticks(range(k), [_short(c, 22) for c in class_names], rotation=15, ha="right")
    ax.set(ylabel="images", title="Class distribution per split")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def gradcam_grid(samples: list[GradcamSample], class_names: list[str], per_class: int) -> Figure:
    """Rows: true classes. Columns: the most confident correct, then wrong, predictions, with Grad-CAM."""
    k, columns = len(class_names), 2 * per_class
    cell = 1.9
    fig = Figure(figsize=(cell * columns + 1.2, cell * k + 0.9), layout="constrained")
    axes = np.asarray(fig.subplots(k, columns, squeeze=False))
    by_cell: dict[tuple[int, int], GradcamSample] = {}
    for c in range(k):
        for outcome, start in ((True, 0), (False, per_class)):
            found = [s for s in samples if s.true == c and s.correct == outcome]
            for offset, sample in enumerate(found[:per_class]):
                by_cell[(c, start + offset)] = sample
    for r in range(k):
        for col in range(columns):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            sample = by_cell.get((r, col))
            if sample is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="grey", fontsize=8, transform=ax.transAxes)
                for spine in ax.spines.values():
                    spine.set_color("#dddddd")
            else:
                ax.imshow(overlay(sample.image, sample.heatmap))
                colour = "#2a7f3f" if sample.correct else "#b22222"
                verdict = "correct" if sample.correct else f"→ {_short(class_names[sample.predicted], 12)}"
                ax.set_title(f"{verdict} {sample.confidence:.2f}", fontsize=7, color=colour)
                for spine in ax.spines.values():
                    spine.set_color(colour)
                    spine.set_linewidth(2)
            if col == 0:
                ax.set_ylabel(_short(class_names[r], 16), fontsize=8)
    fig.suptitle(
        f"Grad-CAM on test images: per true class (rows), the {per_class} most confident correct (left) and "
        f"wrong (right) predictions",
        fontsize=9,
    )
    return fig


def save_png(figure: Figure, path: str | Path) -> Path:
    """Render ``figure`` to a PNG at ``path`` in one atomic write."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    storage.atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


# File name -> title, in the order the report shows them.
TITLES = {
    "confusion_matrix.png": "Confusion matrix",
    "roc_curves.png": "ROC curves",
    "pr_curves.png": "Precision-recall curves",
    "reliability.png": "Calibration",
    "training_curves.png": "Training curves",
    "class_distribution.png": "Class distribution",
    "gradcam.png": "Grad-CAM",
}


def write_plots(
    directory: str | Path,
    evaluation: Evaluation,
    counts: Mapping[str, Mapping[str, int]],
    history: list[Mapping[str, Any]],
    best_epoch: int | None,
    samples: list[GradcamSample],
    per_class: int,
) -> dict[str, Path]:
    """Every plot as a PNG in ``directory``: file name -> path. A plot without data is left out (e.g. no history
    recorded with an older model, Grad-CAM turned off); a plot that fails raises."""
    directory = Path(directory)
    figures: dict[str, Any] = {
        "confusion_matrix.png": lambda: confusion_matrices(evaluation.confusion, evaluation.class_names),
        "roc_curves.png": lambda: roc_curves(evaluation),
        "pr_curves.png": lambda: pr_curves(evaluation),
    }
    if evaluation.reliability is not None:
        figures["reliability.png"] = lambda: reliability_diagram(evaluation.reliability)
    if history:
        figures["training_curves.png"] = lambda: training_curves(history, best_epoch)
    figures["class_distribution.png"] = lambda: class_distribution(counts, evaluation.class_names)
    if samples:
        figures["gradcam.png"] = lambda: gradcam_grid(samples, evaluation.class_names, per_class)
    return {name: save_png(make(), directory / name) for name, make in figures.items()}

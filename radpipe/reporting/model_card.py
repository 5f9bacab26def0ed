"""The model card of a registered version, in Markdown (Mitchell et al., 2019, shaped for imaging models).

Logged beside the model in its MLflow run (``evaluation/model_card.md``, linked from the version's tag
``radpipe.model_card``), written to the KFP ``Markdown`` artifact, and shown inside the HTML report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from radpipe.modelspec import ModelSpec
from radpipe.reporting.findings import (
    NOT_FOR_CLINICAL_USE,
    DataSummary,
    Findings,
    fmt,
    safe_source,
    seed_spreads,
)

VAL_KEYS = ("val_accuracy", "val_macro_f1", "val_loss")

TRAIN_KEYS = (
    "head_on_features",
    "epochs",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "label_smoothing",
    "class_weights",
    "early_stopping_patience",
    "fine_tune_layers",
    "fine_tune_epochs",
    "fine_tune_learning_rate",
    "fine_tune_warmup_epochs",
    "seed",
)

LOGISTIC_KEYS = (
    "head",
    "head_selection",
    "head_cv_folds",
    "head_c",
    "class_weights",
    "augmented_copies",
    "fine_tune_layers",
    "seed",
)
"""The settings that shape a 'logistic' head without fine-tuning: epochs and learning rates do not touch
it, and a card listing them would suggest they did (augmentation does, through ``augmented_copies``)."""

INTENSITY_TEXT = {
    "none": "grey levels as exported",
    "autocontrast": "grey levels stretched per image (darkest pixel black, brightest 1 % white)",
}

FRAMING_TEXT = {
    "stretch": "stretched to the square",
    "pad": "fitted inside the square with the aspect ratio kept, padded with black",
    "trim-pad": "dark border trimmed, then fitted inside the square with the aspect ratio kept, padded with black",
}


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"- **{name}**: {value}" for name, value in rows)


def _value(value: Any) -> str:
    """Config values as the YAML config spells them (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _model(f: Findings) -> str:
    spec, extra = f.spec, f.spec.extra
    model_config = extra.get("model_config", {})
    pre = spec.preprocessing
    weights = safe_source(spec.weights)
    if extra.get("weights_sha256"):
        weights += f" (sha256 `{str(extra['weights_sha256'])[:16]}…`)"
    return _facts(
        [
            ("Backbone", spec.backbone),
            ("Starting weights", weights),
            (
                "Input",
                f"RGB {pre.image_size}×{pre.image_size} ({FRAMING_TEXT.get(pre.framing, pre.framing)}), "
                f"{INTENSITY_TEXT.get(pre.intensity, pre.intensity)}, {pre.resize} resize, {pre.dtype} in "
                f"{list(pre.value_range)}",
            ),
            ("DICOM input", _dicom_input(pre)),
            *([("Features", _features(spec))] if spec.feature_layer else []),
            ("Head", f"dropout {model_config.get('dropout', '?')}, hidden units {model_config.get('dense_units', 0)}"),
            ("Parameters", f"{int(extra['parameters']):,}" if extra.get("parameters") else "–"),
            ("Classes", ", ".join(spec.class_names)),
            *([("Ensemble", _members(spec))] if spec.is_ensemble else []),
            *([("Calibration", _temperature(extra["temperature"]))] if extra.get("temperature") else []),
            *([("Refit", _refit(extra["refit"]))] if extra.get("refit") else []),
        ]
    )


def _features(spec: ModelSpec) -> str:
    """What the head sees: which backbone layers, pooled at which sizes; the card's reader should not have to
    open the Keras graph to know."""
    layers = " + ".join(f"`{name}`" for name in (spec.feature_layer, *spec.pooled_layers))
    sizes = spec.scales or [spec.preprocessing.image_size]
    text = f"{layers} average-pooled at {', '.join(map(str, sizes))} px"
    return text + (", each averaged with its mirror image" if spec.mirror else "")


def _dicom_input(pre: Any) -> str:
    if not pre.windows:
        return "not read (the record predates DICOM support)"
    how = "as grey" if len(pre.windows) == 1 else "as the red, green and blue channels"
    return (
        f"{pre.frame} frame, modality LUT (Hounsfield units for CT), then window {', '.join(map(str, pre.windows))} "
        f"{how}"
    )


def _refit(record: dict[str, Any]) -> str:
    if "skipped" in record:
        return f"none: registered as fitted on train ({record['skipped']})"
    images = record["images"]
    return (
        f"the logistic head, once chosen and calibrated on validation, fitted again with the same C on "
        f"{images['train']} train + {images['val']} validation images"
        + (f" and {record['augmented_copies']} augmented copies of each" if record.get("augmented_copies") else "")
        + " (evaluate.refit): the registered model. "
        "Validation scores in this card are the train-only fit's, test scores this model's"
    )


def _temperature(found: dict[str, Any]) -> str:
    if "skipped" in found:
        return f"none ({found['skipped']})"
    return (
        f"temperature {fmt(found['value'])} fitted on the validation split (its log loss "
        f"{fmt(found['val_loss_before'], 4)} -> {fmt(found['val_loss_after'], 4)}): the logits are divided by it, "
        "so a single model's predicted class is unchanged"
    )


def _members(spec: ModelSpec) -> str:
    members = [
        f"`{m.extra.get('candidate', '?')}` ({m.preprocessing.image_size} px, validation accuracy "
        f"{fmt(m.extra.get('val_metrics', {}).get('val_accuracy'))}, kept epoch {m.extra.get('best_epoch', '?')})"
        for m in spec.members
    ]
    return (
        f"mean of the class probabilities of {len(members)} candidates, the best on validation: "
        + "; ".join(members)
        + ". Each member sees the input resized to its own size; the training settings below are the first member's."
    )


def _training(f: Findings) -> str:
    extra = f.spec.extra
    config = extra.get("train_config", {})
    logistic_only = config.get("head") == "logistic" and not config.get("fine_tune_layers")
    rows = [(key, _value(config[key])) for key in (LOGISTIC_KEYS if logistic_only else TRAIN_KEYS) if key in config]
    augmentation = config.get("augmentation")
    if isinstance(augmentation, dict) and (not logistic_only or config.get("augmented_copies")):
        rows.append(("augmentation", ", ".join(f"{k} {_value(v)}" for k, v in augmentation.items())))
    text = md_table(["setting", "value"], rows) if rows else "_No training configuration was recorded._"
    history = extra.get("history") or []
    val = ", ".join(f"{k.removeprefix('val_')} {fmt(v)}" for k, v in sorted(extra.get("val_metrics", {}).items()))
    if extra.get("logistic_head"):
        text += "\n\n" + _logistic_head(extra["logistic_head"], config)
    if logistic_only and extra.get("logistic_head"):
        refit = "refit" in extra and "skipped" not in extra["refit"]
        text += f"\n\nValidation (the kept head{', fitted on train alone' if refit else ''}): {val}."
    elif extra.get("best_epoch"):
        text += (
            f"\n\nKept epoch {extra['best_epoch']} of {len(history) or '?'} (lowest validation loss). Validation: "
            f"{val}."
        )
    return text


def _logistic_head(tried: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """Each ``C`` the logistic head tried and the score that chose among them, so a reader sees how clear
    the choice was (a flat column means the regularisation hardly mattered)."""
    by_cv = all("cv_loss" in r for r in tried)
    key = "cv_loss" if by_cv else "val_loss"
    kept = min(tried, key=lambda r: r[key])
    judge = (
        f"the lowest out-of-fold log loss of grouped {config.get('head_cv_folds', '?')}-fold cross-validation over "
        "the training split (no group of images on both sides of a fold)"
        if by_cv
        else "the lowest validation log loss"
    )
    rows = [
        (
            f"**{r['c']:g}**" if r is kept else f"{r['c']:g}",
            fmt(r["cv_loss"], 4) if by_cv else "–",
            fmt(r["val_loss"], 4),
            fmt(r.get("val_accuracy")),
        )
        for r in tried
    ]
    return (
        "Head: scikit-learn's multinomial logistic regression on standardised backbone features, fitted on the "
        f"training split; C = {kept['c']:g} kept by {judge}.\n\n"
        + md_table(["C", "cross-validation log loss", "validation log loss", "validation accuracy"], rows)
    )


def _candidates(f: Findings) -> str:
    """Every candidate of the search on validation, and, per recipe run with several seeds, their spread: how
    much of the choice the seed alone made."""
    rows = [
        (
            f"**{c.name}**" if c.name == f.candidate else c.name,
            "–" if c.seed is None else str(c.seed),
            *(fmt(c.val_metrics.get(k), 4 if k == "val_loss" else 3) for k in VAL_KEYS),
        )
        for c in f.candidates
    ]
    text = md_table(["candidate", "seed", "val accuracy", "val macro-F1", "val log loss"], rows)
    for spread in seed_spreads(f.candidates):
        parts = [
            f"{label} {fmt(low, digits)}–{fmt(high, digits)}"
            + (f" ({(high - low) * 100:.1f} points)" if key != "val_loss" else "")
            for key, label, digits in (
                ("val_accuracy", "accuracy", 3),
                ("val_macro_f1", "macro-F1", 3),
                ("val_loss", "log loss", 4),
            )
            if key in spread.ranges
            for low, high in [spread.ranges[key]]
        ]
        text += (
            f"\n\nSpread over seeds {', '.join(map(str, spread.seeds))} (candidates {', '.join(spread.names)}, the "
            "same recipe otherwise), on validation: " + "; ".join(parts) + "."
        )
    return text + (
        "\n\nThe bold candidate is the one registered (an ensemble's members are named under Model). Only "
        "validation chose: no candidate but the registered one was scored on test."
    )


def _data(f: Findings) -> str:
    d = f.data
    splits = [s for s in ("train", "val", "test") if s in d.counts]
    rows = [[c, *(d.counts[s].get(c, 0) for s in splits)] for c in f.spec.class_names]
    rows.append(["**total**", *(sum(d.counts[s].values()) for s in splits)])
    lines = [
        f"- Fingerprint: `{d.fingerprint}` (sha256 over split, class and content of every image: the same "
        "fingerprint means the same images in the same splits)",
        f"- Source: `{d.source or 'unknown'}`",
    ]
    if d.created_splits:
        lines.append(f"- Splits made by radpipe (seeded, stratified, group-disjoint): {', '.join(d.created_splits)}")
    lines += _grouping(d)
    if d.removed_duplicates or d.removed_conflicting or d.unreadable or d.removed_near_duplicates:
        lines.append(
            f"- Removed at ingest: {d.removed_duplicates} exact duplicates, {d.removed_near_duplicates} "
            f"near-duplicates of training images from validation/test, {d.removed_conflicting} images filed "
            f"under more than one class, {d.unreadable} unreadable files"
        )
    if d.dicom:
        lines.append(_dicom_data(d))
    return "\n".join(lines) + "\n\n" + md_table(["class", *splits], rows)


def _dicom_data(d: DataSummary) -> str:
    """The DICOM files: how many, what kind, how grouped, and what of their headers was kept."""
    dc = d.dicom
    counts = lambda items: ", ".join(f"{k} {v}" for k, v in items.items()) or "none recorded"  # noqa: E731
    return (
        f"- DICOM: {dc['files']} files (modality {counts(dc.get('modalities', {}))}; scanner models "
        f"{counts(dc.get('manufacturer_models', {}))}), grouped by {counts(dc.get('grouped_by', {}))}; "
        f"{d.removed_same_patient} validation/test images of patients who also have training images removed. "
        "Of each header only technical tags were kept (modality, pixel spacing, slice thickness, scanner model, "
        "kVp, window values); patient and study enter only as salted hashes (see Known limits for burned-in "
        "annotations)"
    )


def _grouping(d: DataSummary) -> list[str]:
    """How honest the validation and test splits are: what was grouped, and the near-duplicates found."""
    if not d.grouping:
        return [
            "- Grouping: not recorded (the data set was ingested before radpipe grouped images by scan): "
            "validation and test may hold slices of training scans"
        ]
    g = d.grouping
    by = " and ".join(g.get("by") or []) or "nothing (each image its own group)"
    lines = [
        f"- Grouping: images grouped by {by}; {g.get('groups', '?')} groups, the largest of {g.get('largest', '?')} "
        "images. Splits made by radpipe never divide a group; given splits are kept"
        + (f", and {g['across_splits']} groups have images in more than one of them" if g.get("across_splits") else "")
    ]
    nd = d.near_duplicates
    if nd:
        found = ", ".join(f"{pair} {n}" for pair, n in nd.get("found", {}).items())
        lines.append(
            f"- Near-duplicates: {nd.get('hash', '?')} within {nd.get('max_bits', '?')} bits; pairs across the "
            f"given splits before removal: {found or 'none'}; {d.removed_near_duplicates} validation/test images "
            "with a training look-alike removed"
        )
    else:
        lines.append(
            "- Near-duplicates: not searched (data.near_duplicates: false): validation and test may hold "
            "look-alikes of training images"
        )
    return lines


def _evaluation(f: Findings) -> str:
    intervals = f.evaluation.intervals
    level = f.interval_label
    per_class = [
        (name, support, *(f"{value} ({interval})" for value, interval in scores), auc)
        for name, support, scores, auc in f.per_class_rows()
    ]
    note = (
        f"Confidence intervals: percentile bootstrap over the test images, {intervals.samples} resamples."
        if intervals
        else "No confidence intervals were computed (evaluate.bootstrap_samples = 0)."
    )
    return (
        f"On the held-out test split ({f.test_images} images), never used to train or to choose the candidate.\n\n"
        + md_table(["metric", "value", level], f.overall_rows())
        + "\n\n"
        + md_table(
            ["class", "test images", f"precision ({level})", f"recall / sensitivity ({level})", f"F1 ({level})", "AUC"],
            per_class,
        )
        + f"\n\n{note}"
    )


def _gate(f: Findings) -> str:
    d = f.decision
    outcome = (
        f"**passed**: `{f.challenger_alias}` moves to this version"
        if d.passed
        else f"**failed**: registered, but `{f.challenger_alias}` does not move to it"
    )
    lines = [f"Gate {outcome}.", ""]
    lines += [f"- {'✔' if c.passed else '✘'} {c.detail}" for c in d.checks]
    g = f.gate

    def threshold(value: float) -> str:
        return f"≥ {value}" if value > 0 else "none set"

    lines += [
        "",
        f"Configured (register.gate): macro-F1 {threshold(g.min_macro_f1)}; every class recall "
        f"{threshold(g.min_class_recall)}; {g.champion_metric} at most {g.champion_margin} below the "
        f"{f.champion.alias}'s on the same test split; a {f.champion.alias} that cannot be re-scored: "
        f"{g.on_champion_error}.",
    ]
    rows = f.comparison()
    if rows:
        lines += [
            "",
            md_table(
                ["on this test split", "this version", f"{f.champion.alias} (version {f.champion.version})"],
                [(metric, fmt(ours), fmt(theirs)) for metric, ours, theirs in rows],
            ),
        ]
    return "\n".join(lines)


def build_model_card(f: Findings) -> str:
    header = _facts(
        [
            ("Model", f"`{f.uri}`"),
            ("Registered", f"{f.created}, radpipe {f.radpipe_version}"),
            ("Candidate", f"{f.candidate} (MLflow run `{f.run_id}`)"),
            ("Gate", "passed" if f.decision.passed else "failed"),
            ("Classes", ", ".join(f.spec.class_names)),
        ]
    )
    sections = [
        f"# Model card: {f.model_name}, version {f.version}",
        f"> {NOT_FOR_CLINICAL_USE}",
        header,
        "## Intended use\n\n"
        "Research and engineering: classifying single 2D images like those of the training data (see Data; "
        "radpipe's first use is chest CT slices) into the classes above, comparing training set-ups, testing an "
        "MLOps pipeline. **Out of scope:** any use in patient care; images unlike the training data (other "
        "modalities, body regions, scanners, protocols, paediatric patients); 3D volumes.",
        "## Model\n\n" + _model(f),
        "## Training\n\n" + _training(f),
        *(["## Candidates\n\n" + _candidates(f)] if len(f.candidates) > 1 else []),
        "## Data\n\n" + _data(f),
        "## Evaluation\n\n" + _evaluation(f),
        "## Gate decision\n\n" + _gate(f),
        "## Known limits\n\n" + "\n".join(f"- {note}" for note in f.limits()),
        "## Not for clinical use\n\n" + NOT_FOR_CLINICAL_USE,
    ]
    return "\n\n".join(sections) + "\n"

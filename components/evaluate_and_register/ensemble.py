"""The average of the best candidates, as one more candidate that competes on validation.

Why: validation splits here are tens of images, so which single candidate scores best on them is partly
luck, and each candidate's kept epoch was itself picked on the same images. Averaging the probabilities
of the ``evaluate.ensemble`` best candidates cancels part of that noise and is usually better on unseen
images. It is still chosen on validation, never on test: the average replaces the best single candidate
only if it scores at least as well there, by the same rule that ranks candidates (``evaluate.select_by``).

The ensemble is one Keras model (``image -> [resize] -> member_i -> average``), saved, logged, served and
explained like any radpipe model; its record (``ModelSpec.members``) keeps every member's own record.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from radpipe.batches import predict_in_batches
from radpipe.components.evaluate_and_register.evaluate import (
    Candidate,
    load_candidate,
    ranked,
    selection_key,
)
from radpipe.dataset import Split
from radpipe.errors import RadpipeError
from radpipe.modelspec import ModelSpec
from radpipe.preprocessing import Preprocessing
from radpipe.validation import validation_scores

logger = logging.getLogger(__name__)

MEMBER_LAYER = "member_{}"


def ensemble_name(members: list[Candidate]) -> str:
    return "ensemble(" + "+".join(m.name for m in members) + ")"


def build_model(models: list[Any], image_sizes: list[int]) -> Any:
    """One Keras model averaging the members' probabilities; input at the largest member's size, and an
    antialiased resize in front of each smaller member (downscaling loses less than upscaling)."""
    import keras

    size = max(image_sizes)
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    outputs = []
    for i, (model, member_size) in enumerate(zip(models, image_sizes, strict=True)):
        member = keras.Model(model.input, model.output, name=MEMBER_LAYER.format(i))  # unique layer name
        x = inputs
        if member_size != size:
            x = keras.layers.Resizing(
                member_size, member_size, interpolation="bilinear", antialias=True, name=f"resize_{i}"
            )(x)
        outputs.append(member(x, training=False))
    probabilities = keras.layers.Average(name="probabilities")(outputs)
    return keras.Model(inputs, probabilities, name="radpipe_ensemble")


SHARED_INPUT = "window DICOM (model.window), frame images (model.framing) and adjust grey levels (model.intensity)"
"""What an ensemble's members must do alike, since their one input is made once: the settings to name."""


def input_preprocessing(members: list[Candidate]) -> Preprocessing | None:
    """What the ensemble's one input takes: the largest member's size, and everything else the members' inputs
    share (DICOM windows, framing, grey levels); None when they differ in more than size (one input cannot
    be made two ways; each member resizes the largest to its own)."""
    shared = {dataclasses.replace(m.spec.preprocessing, image_size=0) for m in members}
    if len(shared) != 1:
        return None
    return dataclasses.replace(shared.pop(), image_size=max(m.spec.preprocessing.image_size for m in members))


def build_spec(members: list[Candidate], val_metrics: dict[str, float]) -> ModelSpec:
    """The ensemble's record: its input, its members' records, and (for the model card) the best member's
    training provenance under ``extra``."""
    class_names = members[0].spec.class_names
    for m in members[1:]:
        if m.spec.class_names != class_names:
            raise RadpipeError(
                f"candidates '{members[0].name}' and '{m.name}' have different classes ({class_names} vs "
                f"{m.spec.class_names}); they were not trained on the same data set, so they cannot be averaged"
            )
    top = members[0].spec
    preprocessing = input_preprocessing(members)
    if preprocessing is None:
        raise RadpipeError(
            f"candidates {', '.join(m.name for m in members)} do not all {SHARED_INPUT} alike; an ensemble has "
            "one input, so they cannot be averaged: give the search's candidates the same settings, or set "
            "evaluate.ensemble: 1"
        )
    return ModelSpec(
        class_names=list(class_names),
        preprocessing=preprocessing,
        backbone="+".join(dict.fromkeys(m.spec.backbone for m in members)),
        weights=top.weights if all(m.spec.weights == top.weights for m in members) else "mixed",
        backbone_layer="",
        feature_layer="",
        extra={
            **{k: top.extra[k] for k in ("model_config", "train_config", "weights_sha256") if k in top.extra},
            "candidate": ensemble_name(members),
            "parameters": sum(int(m.spec.extra.get("parameters") or 0) for m in members) or None,
            "val_metrics": val_metrics,
            "member_runs": {m.name: m.run_id for m in members},
        },
        members=[
            ModelSpec(
                **{**m.spec.__dict__, "extra": {**m.spec.extra, "layer": MEMBER_LAYER.format(i), "candidate": m.name}}
            )
            for i, m in enumerate(members)
        ],
    )


def prefers_average(average: dict[str, float], single: dict[str, float], select_by: str = "val_loss") -> bool:
    """The average replaces the best single candidate when it is at least as good on validation."""
    return selection_key(average, select_by) >= selection_key(single, select_by)


def consider(
    candidates: list[Candidate],
    best: Candidate,
    best_model: Any,
    load_val: Callable[[Preprocessing], Split],
    size: int,
    batch_size: int,
    select_by: str = "val_loss",
) -> tuple[Candidate, Any]:
    """``best`` and its model, or the average of the ``size`` best candidates if it is at least as good on
    validation. Both are scored here by the same code on the same images, so the comparison is fair;
    ``load_val`` gives the validation split as a model of that preprocessing takes it."""
    members = ranked(candidates, select_by)[:size]
    if len(members) < 2:
        return best, best_model
    shared = input_preprocessing(members)
    if shared is None:
        logger.info(
            f"evaluate: the best candidates do not all {SHARED_INPUT} alike and cannot share one input; no "
            f"ensemble, registering '{best.name}'"
        )
        return best, best_model
    models = [best_model if m is best else load_candidate(m) for m in members]
    model = build_model(models, [m.spec.preprocessing.image_size for m in members])
    name = ensemble_name(members)
    contenders = (
        (best.name, best.spec.preprocessing, best_model),
        (name, shared, model),
    )
    scored: dict[str, dict[str, float]] = {}
    for label, preprocessing, scorer in contenders:
        val = load_val(preprocessing)
        if len(val) == 0:
            logger.info("evaluate: no validation images; the ensemble cannot be compared, keeping the best candidate")
            return best, best_model
        probabilities = predict_in_batches(scorer, val.images, batch_size, f"evaluate: validation of {label}")
        scored[label] = validation_scores(val.labels, probabilities, len(best.spec.class_names))
        logger.info(f"evaluate: {label}: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(scored[label].items())))
    single, average = scored[best.name], scored[name]
    if not prefers_average(average, single, select_by):
        logger.info(f"evaluate: the ensemble is worse on validation than '{best.name}'; registering '{best.name}'")
        return best, best_model
    logger.info(f"evaluate: chose {name} on validation over '{best.name}'")
    ensemble = Candidate(path=None, spec=build_spec(members, average), name=name, run_id="", val_metrics=average)
    return ensemble, model

"""Register the chosen candidate with its logistic head refitted on train + validation (``evaluate.refit``).

Validation does its work first, on the head fitted on train alone: it chooses the candidate (or ensemble)
and fits the temperature. Its images then have nothing left to judge, so the registered model learns from
them too, as scikit-learn's ``GridSearchCV`` refits the chosen setting on all the data it searched: the
train stage fits the kept ``C`` once more on train + validation (:data:`~radpipe.modelspec.REFIT_HEAD_FILE`),
and this module swaps those weights in, divided by the fitted temperature. On the chest CT data the
validation split holds scans that train lacks, and the head's learning curve is still falling at full size
(docs/benchmarks.md, "Refit on train + validation").

Only the head changes: the backbone is frozen, so the features, preprocessing and Grad-CAM are the same. The
validation scores in the record stay those of the train-only fit that was chosen on them; the test scores
are the registered model's. A candidate without a refitted head (fine-tuned, or a Keras head) is registered
as chosen, and its record says why.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from radpipe.components.evaluate_and_register import temperature
from radpipe.components.evaluate_and_register.evaluate import Candidate
from radpipe.components.evaluate_and_register.temperature import OUTPUT_LAYER
from radpipe.errors import RadpipeError
from radpipe.modelspec import ModelSpec

logger = logging.getLogger(__name__)


def _members(best: Candidate, candidates: list[Candidate]) -> list[tuple[ModelSpec, Candidate]]:
    """Each member's record with the candidate (and folder) it came from; a single model is its own member."""
    if not best.spec.is_ensemble:
        return [(best.spec, best)]
    by_name = {c.name: c for c in candidates}
    return [(member, by_name[member.extra["candidate"]]) for member in best.spec.members]


def _weights(candidate: Candidate) -> tuple[np.ndarray, np.ndarray]:
    record = candidate.spec.extra["refit_head"]
    path = candidate.path / record["file"] if candidate.path else None
    if path is None or not path.is_file():
        raise RadpipeError(
            f"candidate '{candidate.name}' records a refitted head ({record['file']}) that its model folder lacks; "
            "re-run its train task, or set evaluate.refit to false"
        )
    data = np.load(path, allow_pickle=False)
    return data["kernel"], data["bias"]


def refit(model: Any, best: Candidate, candidates: list[Candidate]) -> Candidate:
    """Swap each member's head for its train + validation fit, in place (after calibration: the temperature
    found on validation divides the new weights too); ``best`` with its record saying what was done."""
    members = _members(best, candidates)
    missing = [c.name for _, c in members if "refit_head" not in c.spec.extra]
    if missing:
        reason = (
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no refitted head "
            "(only a logistic head without fine-tuning has one: train.head 'logistic', train.fine_tune_layers 0)"
        )
        logger.info(f"evaluate: registered as fitted on train: {reason}")
        return dataclasses.replace(best, spec=best.spec.with_extra(refit={"skipped": reason}))
    for member, candidate in members:
        kernel, bias = _weights(candidate)
        network = model.get_layer(member.extra["layer"]) if best.spec.is_ensemble else model
        layer = network.get_layer(OUTPUT_LAYER)
        if tuple(layer.kernel.shape) != kernel.shape:
            raise RadpipeError(
                f"candidate '{candidate.name}': its refitted head is {kernel.shape}, its model's head "
                f"{tuple(layer.kernel.shape)}; the folder was written by two different train runs, re-run it"
            )
        layer.set_weights([kernel, bias])
    found = best.spec.extra.get("temperature") or {}
    if "value" in found:
        temperature.apply(model, best.spec, float(found["value"]))
    images = members[0][1].spec.extra["refit_head"]["images"]
    record = {
        "images": images,
        "augmented_copies": members[0][1].spec.extra["refit_head"].get("augmented_copies", 0),
        "c": {c.name: c.spec.extra["refit_head"]["c"] for _, c in members},
    }
    logger.info(
        f"evaluate: registering {best.name} with its logistic head refitted on {images['train']} train + "
        f"{images['val']} validation images (evaluate.refit)"
    )
    return dataclasses.replace(best, spec=best.spec.with_extra(refit=record))

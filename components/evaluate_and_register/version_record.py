"""What a registered version says about itself: its tags and its description.

Written once, when the version is created (``radpipe.registration.pending_version``), so that ``radpipe
models``, the MLflow UI and a later promote read the candidate, its data, its test scores and the gate's
reasons from the version alone, without opening its run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radpipe.json_safe import finite_metrics
from radpipe.modelspec import ModelSpec

if TYPE_CHECKING:
    from radpipe.components.evaluate_and_register.evaluate import Candidate, Evaluation
    from radpipe.components.evaluate_and_register.gate import Decision

CARD_ARTIFACT = "evaluation/model_card.md"
REPORT_ARTIFACT = "evaluation/report.html"
PLOTS_ARTIFACT_DIR = "evaluation/plots"


def ensemble_tags(best: Candidate) -> dict[str, str]:
    """An ensemble's members by candidate name, and each member's MLflow run."""
    if not best.spec.is_ensemble:
        return {}
    runs = best.spec.extra.get("member_runs", {})
    return {
        "radpipe.members": ",".join(m.extra["candidate"] for m in best.spec.members),
        **{f"radpipe.member_run.{k}": v for k, v in runs.items() if v},
    }


def temperature_tags(spec: ModelSpec) -> dict[str, str]:
    """The fitted temperature, or why none was fitted."""
    found = spec.extra.get("temperature")
    if not found:
        return {}
    if "skipped" in found:
        return {"radpipe.temperature": f"not fitted: {found['skipped']}"}
    return {"radpipe.temperature": f"{found['value']:.4f}"}


def refit_tags(spec: ModelSpec) -> dict[str, str]:
    """What the registered head was fitted on."""
    record = spec.extra.get("refit")
    if not record:
        return {}
    if "skipped" in record:
        return {"radpipe.refit": f"no: {record['skipped']}"}
    return {"radpipe.refit": f"train+val ({record['images']['train']}+{record['images']['val']} images)"}


def version_tags(
    best: Candidate, evaluation: Evaluation, decision: Decision, parent_run_id: str, data_fingerprint: str, run_id: str
) -> dict[str, str]:
    """Every tag of the new version; the card and report tags are set once those files are uploaded."""
    test_scores = finite_metrics({k: v for k, v in evaluation.metrics.items() if k != "images"})
    return {
        "radpipe.data_fingerprint": data_fingerprint,
        "radpipe.candidate": best.name,
        "radpipe.parent_run_id": parent_run_id,
        "radpipe.backbone": best.spec.backbone,
        "radpipe.image_size": str(best.spec.preprocessing.image_size),
        "radpipe.model_card": f"runs:/{run_id}/{CARD_ARTIFACT}",
        "radpipe.report": f"runs:/{run_id}/{REPORT_ARTIFACT}",
        **ensemble_tags(best),
        **temperature_tags(best.spec),
        **refit_tags(best.spec),
        **{f"radpipe.{k}": f"{v:.4f}" for k, v in best.val_metrics.items()},
        **{f"radpipe.test_{k}": f"{v:.4f}" for k, v in test_scores.items()},
        "radpipe.test_images": str(int(evaluation.metrics["images"])),
        **decision.tags(),
    }


def describe(best: Candidate, evaluation: Evaluation, decision: Decision, data_fingerprint: str, run_id: str) -> str:
    """The version's description: what it is, how it scored, what the gate said, where its card is."""
    m = evaluation.metrics
    return (
        f"{best.spec.backbone} candidate '{best.name}': test accuracy {m['accuracy']:.3f}, macro-F1 "
        f"{m['macro_f1']:.3f} on {int(m['images'])} images; data {data_fingerprint[:12]}. Gate {decision.verdict}: "
        f"{'; '.join(decision.reasons)}. Model card: runs:/{run_id}/{CARD_ARTIFACT}. "
        "Research use only, not for clinical use."
    )

"""The evaluate-and-register stage as one call.

1. Choose the best candidate on validation (or the average of the best few, ``evaluate.ensemble``, if it
   is at least as good there); fit its temperature on validation (``evaluate.calibrate``); score it on
   test (metrics, calibration, bootstrap intervals).
2. Re-score the current champion on the same test split; decide the gate.
3. Render the plots (Grad-CAM included).                      -- the registry is untouched up to here
4. Log metrics, plots and the model to the candidate's MLflow run.
5. Register a new version (``pending``, all tags in one call); write the model card and the report, which
   name the version; mark it ``complete``; move aliases only if it passed the gate (radpipe.registry).
6. Close the pipeline's MLflow parent run (FAILED on any error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radpipe import deployment, storage, tracking
from radpipe.components.evaluate_and_register import ensemble as ensembling
from radpipe.components.evaluate_and_register import temperature
from radpipe.components.evaluate_and_register.champion import ChampionScore, rescore_champion
from radpipe.components.evaluate_and_register.evaluate import (
    Candidate,
    Evaluation,
    choose,
    evaluate_split,
    load_candidate,
    read_candidates,
)
from radpipe.components.evaluate_and_register.explain import gradcam_samples
from radpipe.components.evaluate_and_register.gate import Decision, decide
from radpipe.components.evaluate_and_register.intervals import bootstrap
from radpipe.components.evaluate_and_register.register import Registration, log_model, register
from radpipe.config import EvaluateConfig, RegisterConfig, TrackingConfig
from radpipe.dataset import Split, load_split, read_manifest
from radpipe.errors import RadpipeError
from radpipe.modelspec import ModelSpec
from radpipe.preprocessing import Preprocessing
from radpipe.reporting import plots as plotting
from radpipe.reporting.findings import DataSummary, Findings
from radpipe.reporting.model_card import build_model_card
from radpipe.reporting.report import build_report

logger = logging.getLogger(__name__)

CARD_ARTIFACT = "evaluation/model_card.md"
REPORT_ARTIFACT = "evaluation/report.html"
PLOTS_ARTIFACT_DIR = "evaluation/plots"


@dataclass
class EvaluateOutputs:
    registered: Registration
    candidate: str
    evaluation: Evaluation
    decision: Decision

    @property
    def aliases(self) -> list[str]:
        return self.registered.aliases


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: JSON (KFP metadata, MLflow artifacts) has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def test_metrics_for_mlflow(evaluation: Evaluation) -> dict[str, float]:
    metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    for name, values in evaluation.per_class.items():
        for key in ("precision", "recall", "f1", "roc_auc"):
            if key in values:
                metrics[f"test_{key}.{name}"] = values[key]
    if evaluation.intervals is not None:
        for key, (low, high) in evaluation.intervals.overall.items():
            metrics[f"test_{key}_ci_low"], metrics[f"test_{key}_ci_high"] = low, high
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


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
    found = spec.extra.get("temperature")
    if not found:
        return {}
    if "skipped" in found:
        return {"radpipe.temperature": f"not fitted: {found['skipped']}"}
    return {"radpipe.temperature": f"{found['value']:.4f}"}


def version_tags(
    best: Candidate, evaluation: Evaluation, decision: Decision, parent_run_id: str, data_fingerprint: str, run_id: str
) -> dict[str, str]:
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
        **{f"radpipe.{k}": f"{v:.4f}" for k, v in best.val_metrics.items()},
        **{
            f"radpipe.test_{k}": f"{v:.4f}" for k, v in evaluation.metrics.items() if k != "images" and math.isfinite(v)
        },
        "radpipe.test_images": str(int(evaluation.metrics["images"])),
        **decision.tags(),
    }


def describe(best: Candidate, evaluation: Evaluation, decision: Decision, data_fingerprint: str, run_id: str) -> str:
    m = evaluation.metrics
    return (
        f"{best.spec.backbone} candidate '{best.name}': test accuracy {m['accuracy']:.3f}, macro-F1 "
        f"{m['macro_f1']:.3f} on {int(m['images'])} images; data {data_fingerprint[:12]}. Gate {decision.verdict}: "
        f"{'; '.join(decision.reasons)}. Model card: runs:/{run_id}/{CARD_ARTIFACT}. "
        "Research use only, not for clinical use."
    )


def _metric(key: str, value: float) -> Any:
    from mlflow.entities import Metric

    return Metric(key=key, value=float(value), timestamp=int(time.time() * 1000), step=0)


def run(
    dataset_dir: str,
    candidate_dirs: list[str],
    evaluate: dict,
    register: dict,
    track: dict,
    parent_run_id: str,
    data_fingerprint: str,
    report_path: str = "",
    model_card_path: str = "",
    serving_manifest_path: str = "",
) -> EvaluateOutputs:
    """The whole stage; ``report_path``/``model_card_path`` are where the KFP HTML/Markdown outputs go,
    ``serving_manifest_path`` where the KServe InferenceService of the new version goes."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    evaluate_config = EvaluateConfig.from_dict(evaluate, "evaluate")
    register_config = RegisterConfig.from_dict(register, "register")
    track_config = TrackingConfig.from_dict(track, "tracking")
    uri = tracking.resolve_tracking_uri(track_config.uri)
    experiment_id = tracking.setup_experiment(uri, track_config.experiment)
    client = MlflowClient()
    try:
        try:
            outputs = _run(
                client,
                experiment_id,
                dataset_dir,
                candidate_dirs,
                evaluate_config,
                register_config,
                parent_run_id,
                data_fingerprint,
                report_path,
                model_card_path,
                serving_manifest_path,
            )
        except MlflowException as exc:  # before a version existed (register() reports its own failures)
            raise RadpipeError(
                f"MLflow at {uri} failed during evaluate-and-register: {exc.message}. Nothing was registered and "
                "no alias moved; re-run once MLflow answers"
            ) from exc
    except BaseException:
        if parent_run_id:
            try:
                client.set_terminated(parent_run_id, status="FAILED")
            except Exception as exc:  # the original error is the one to report
                logger.warning(f"evaluate: could not mark the pipeline's MLflow run {parent_run_id} as failed: {exc}")
        raise
    if parent_run_id:
        client.set_tag(parent_run_id, "radpipe.registered", outputs.registered.uri)
        client.set_tag(parent_run_id, "radpipe.chosen_candidate", outputs.candidate)
        client.set_tag(parent_run_id, "radpipe.gate", outputs.decision.verdict)
        client.set_terminated(parent_run_id, status="FINISHED")
    return outputs


def serving_alias(passed: bool, champion: ChampionScore, config: RegisterConfig) -> str:
    """The alias the new version is about to get, which names its InferenceService (``chest-ct-challenger``);
    a version that failed the gate gets none and its service is named by version number."""
    if not passed:
        return ""
    return config.challenger_alias if champion.version else config.champion_alias


def _run(
    client: Any,
    experiment_id: str,
    dataset_dir: str,
    candidate_dirs: list[str],
    evaluate_config: EvaluateConfig,
    register_config: RegisterConfig,
    parent_run_id: str,
    data_fingerprint: str,
    report_path: str,
    model_card_path: str,
    serving_manifest_path: str,
) -> EvaluateOutputs:
    name = register_config.model_name
    # 1. Choose on validation, score on test.
    candidates = read_candidates(candidate_dirs)
    best = choose(candidates, evaluate_config.select_by)
    model = load_candidate(best)
    class_names = best.spec.class_names

    @functools.cache
    def load_val(preprocessing: Preprocessing) -> Split:  # decoded once per input size, however often asked
        return load_split(dataset_dir, "val", preprocessing, class_names)

    if evaluate_config.ensemble > 1:
        best, model = ensembling.consider(
            candidates,
            best,
            model,
            load_val,
            evaluate_config.ensemble,
            evaluate_config.batch_size,
            evaluate_config.select_by,
        )
    if evaluate_config.calibrate:
        val = load_val(best.spec.preprocessing)
        spec = temperature.calibrate(model, best.spec, val.images, val.labels, evaluate_config.batch_size)
        best = dataclasses.replace(best, spec=spec)
    test = load_split(dataset_dir, "test", best.spec.preprocessing, best.spec.class_names)
    evaluation = evaluate_split(model, test, evaluate_config.batch_size, evaluate_config.calibration_bins)
    if evaluate_config.bootstrap_samples:
        evaluation.intervals = bootstrap(
            evaluation.labels,
            evaluation.predictions,
            evaluation.class_names,
            evaluate_config.bootstrap_samples,
            evaluate_config.confidence_level,
            evaluate_config.seed,
        )
    logger.info(
        "evaluate: test "
        + " ".join(f"{k}={v:.4f}" for k, v in evaluation.metrics.items() if k != "images")
        + f" on {int(evaluation.metrics['images'])} images"
    )
    # 2. The champion on the same test split, and the gate.
    champion = rescore_champion(
        name,
        register_config.champion_alias,
        dataset_dir,
        best.spec.class_names,
        evaluate_config.batch_size,
        evaluate_config.calibration_bins,
    )
    decision = decide(evaluation, champion, register_config.gate)
    logger.info(f"evaluate: gate {decision.verdict}: " + "; ".join(decision.reasons))
    if register_config.gate.min_macro_f1 == 0 and register_config.gate.min_class_recall == 0:
        logger.info("evaluate: note: no absolute gate thresholds set (register.gate.min_macro_f1, min_class_recall)")
    manifest = read_manifest(dataset_dir)
    data = DataSummary.from_manifest(manifest, data_fingerprint)
    own_run = not best.run_id  # an ensemble made here, or candidates trained without MLflow runs
    run_id = best.run_id or _create_run(client, experiment_id, best, parent_run_id)
    # The training curves of an ensemble are those of its best member.
    trained = best.spec.members[0] if best.spec.is_ensemble else best.spec
    with (
        _closed_at_end(client, run_id if own_run else ""),
        tempfile.TemporaryDirectory(prefix="radpipe-evaluate-") as tmp,
    ):
        # 3. Plots. A plot that fails stops the stage here, before the registry is touched.
        samples = gradcam_samples(model, best.spec, test, evaluation, evaluate_config.gradcam_per_class)
        plots = plotting.write_plots(
            Path(tmp) / "plots",
            evaluation,
            data.counts,
            list(trained.extra.get("history") or []),
            trained.extra.get("best_epoch"),
            samples,
            evaluate_config.gradcam_per_class,
        )
        logger.info(f"evaluate: wrote {len(plots)} plots: {', '.join(plots)}")
        # 4. Everything about this candidate into its MLflow run.
        metrics = test_metrics_for_mlflow(evaluation)
        if champion.evaluation is not None:
            metrics.update({f"champion_{k}": v for k, v in test_metrics_for_mlflow(champion.evaluation).items()})
        for target in dict.fromkeys(filter(None, (run_id, parent_run_id))):
            client.log_batch(target, metrics=[_metric(k, v) for k, v in metrics.items()])
        client.log_dict(
            run_id,
            json_safe(
                {
                    "classes": evaluation.class_names,
                    "metrics": evaluation.metrics,
                    "per_class": evaluation.per_class,
                    "confusion": evaluation.confusion,
                    "intervals": evaluation.intervals.to_dict() if evaluation.intervals else None,
                    "reliability": evaluation.reliability.to_dict() if evaluation.reliability else None,
                    "gate": decision.to_dict(),
                }
            ),
            "evaluation/test.json",
        )
        client.log_artifacts(run_id, str(Path(tmp) / "plots"), PLOTS_ARTIFACT_DIR)
        model_info = log_model(model, best.spec.with_extra(data_fingerprint=data_fingerprint), test.images[:1], run_id)

        # 5. Register; the card and the report name the version, so they are written once it exists.
        def publish(version: str) -> None:
            findings = Findings(
                model_name=name,
                version=version,
                candidate=best.name,
                run_id=run_id,
                parent_run_id=parent_run_id,
                spec=best.spec,
                evaluation=evaluation,
                data=data,
                decision=decision,
                gate=register_config.gate,
                champion=champion,
                challenger_alias=register_config.challenger_alias,
            )
            card = build_model_card(findings)
            page = build_report(findings, card, plots)
            if model_card_path:
                storage.atomic_write_text(model_card_path, card)
            if report_path:
                storage.atomic_write_text(report_path, page)
            client.log_text(run_id, card, CARD_ARTIFACT)
            client.log_text(run_id, page, REPORT_ARTIFACT)
            if serving_manifest_path:  # before any alias moves: a failure here moves none
                deployment.write_serving_manifest(
                    serving_manifest_path, name, version, serving_alias(decision.passed, champion, register_config)
                )

        registered = register(
            client,
            name,
            model_info.model_uri,
            run_id,
            version_tags(best, evaluation, decision, parent_run_id, data_fingerprint, run_id),
            describe(best, evaluation, decision, data_fingerprint, run_id),
            decision.passed,
            publish,
            register_config.champion_alias,
            register_config.challenger_alias,
            model_id=model_info.model_id,
        )
    return EvaluateOutputs(registered, best.name, evaluation, decision)


def _create_run(client: Any, experiment_id: str, best: Candidate, parent_run_id: str) -> str:
    """A child run of the pipeline's run for a model no train task logged: an ensemble, with its members."""
    tags = {"radpipe.candidate": best.name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tags.update(ensemble_tags(best))
    run_id = client.create_run(experiment_id, run_name=best.name, tags=tags).info.run_id
    tracking.record_run(run_id)
    if best.val_metrics:
        client.log_batch(run_id, metrics=[_metric(k, v) for k, v in best.val_metrics.items()])
    return run_id


@contextlib.contextmanager
def _closed_at_end(client: Any, run_id: str) -> Iterator[None]:
    """End a run this stage created: FINISHED, or FAILED if anything below raised."""
    try:
        yield
    except BaseException:
        if run_id:
            client.set_terminated(run_id, status="FAILED")
        raise
    if run_id:
        client.set_terminated(run_id, status="FINISHED")

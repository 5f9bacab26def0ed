"""The evaluate-and-register stage as one call, in straight steps.

1. Select the best candidate on validation (or the average of the best few, ``evaluate.ensemble``, if it
   is at least as good there).
2. Calibrate: fit its temperature on validation (``evaluate.calibrate``); then register the logistic head
   refitted on train + validation, which validation has no more use for (``evaluate.refit``).
3. Score it on test: metrics, calibration, bootstrap intervals.
4. Gate: re-score the current champion on the same test split and decide. Render the plots (Grad-CAM
   included) and log everything to the candidate's MLflow run.       -- the registry is untouched up to here
5. Register a new version, ``pending`` with all its tags (:mod:`radpipe.registration`).
6. Publish what names the version: the model card, the HTML report, the serving manifest; mark it complete.
7. Move aliases, only if it passed the gate.
Then close the pipeline's MLflow parent run (FAILED on any error). A failure in steps 5-7 marks the version
failed and moves no alias.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radpipe import deployment, registration, storage, tracking
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
from radpipe.components.evaluate_and_register.refit import refit
from radpipe.components.evaluate_and_register.version_record import (
    CARD_ARTIFACT,
    PLOTS_ARTIFACT_DIR,
    REPORT_ARTIFACT,
    describe,
    ensemble_tags,
    version_tags,
)
from radpipe.config import EvaluateConfig, RegisterConfig, TrackingConfig
from radpipe.dataset import Split, load_split, read_manifest
from radpipe.errors import RadpipeError
from radpipe.json_safe import finite_metrics, json_safe
from radpipe.preprocessing import Preprocessing
from radpipe.reporting import plots as plotting
from radpipe.reporting.findings import CandidateSummary, DataSummary, Findings
from radpipe.reporting.model_card import build_model_card
from radpipe.reporting.report import build_report

logger = logging.getLogger(__name__)


@dataclass
class EvaluateOutputs:
    registered: registration.Registration
    candidate: str
    evaluation: Evaluation
    decision: Decision

    @property
    def aliases(self) -> list[str]:
        return self.registered.aliases


@dataclass(frozen=True)
class OutputPaths:
    """Where the KFP outputs go (``""``: not wanted): the HTML report, the Markdown card, the KServe manifest."""

    report: str = ""
    model_card: str = ""
    serving_manifest: str = ""


@dataclass
class ValidationSplits:
    """The validation split decoded once per input size, however often selection and calibration ask."""

    dataset_dir: str
    class_names: list[str]
    decoded: dict[Preprocessing, Split] = field(default_factory=dict)

    def __call__(self, preprocessing: Preprocessing) -> Split:
        if preprocessing not in self.decoded:
            self.decoded[preprocessing] = load_split(self.dataset_dir, "val", preprocessing, self.class_names)
        return self.decoded[preprocessing]


def test_metrics_for_mlflow(evaluation: Evaluation) -> dict[str, float]:
    """Test scores, per-class scores and interval bounds as flat MLflow metrics (``test_recall.normal``)."""
    metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    for name, values in evaluation.per_class.items():
        for key in ("precision", "recall", "f1", "roc_auc"):
            if key in values:
                metrics[f"test_{key}.{name}"] = values[key]
    if evaluation.intervals is not None:
        for key, (low, high) in evaluation.intervals.overall.items():
            metrics[f"test_{key}_ci_low"], metrics[f"test_{key}_ci_high"] = low, high
    return finite_metrics(metrics)


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
    paths = OutputPaths(report_path, model_card_path, serving_manifest_path)
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
                paths,
            )
        except MlflowException as exc:  # before a version existed (registration reports its own failures)
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
    paths: OutputPaths,
) -> EvaluateOutputs:
    name = register_config.model_name
    candidates, best, model, val = select(dataset_dir, candidate_dirs, evaluate_config)  # 1.
    if evaluate_config.calibrate:  # 2.
        split = val(best.spec.preprocessing)
        spec = temperature.calibrate(model, best.spec, split.images, split.labels, evaluate_config.batch_size)
        best = dataclasses.replace(best, spec=spec)
    if evaluate_config.refit:
        best = refit(model, best, candidates)
    test, evaluation = score(model, best, dataset_dir, evaluate_config)  # 3.
    champion, decision = gate(name, dataset_dir, best, evaluation, evaluate_config, register_config)  # 4.
    own_run = not best.run_id  # an ensemble made here, or candidates trained without MLflow runs
    run_id = best.run_id or _create_run(client, experiment_id, best, parent_run_id)
    findings = Findings(
        model_name=name,
        version="",  # known once registered (5.)
        candidate=best.name,
        run_id=run_id,
        parent_run_id=parent_run_id,
        spec=best.spec,
        evaluation=evaluation,
        data=DataSummary.from_manifest(read_manifest(dataset_dir), data_fingerprint),
        decision=decision,
        gate=register_config.gate,
        champion=champion,
        challenger_alias=register_config.challenger_alias,
        candidates=[CandidateSummary.of(c.name, c.spec) for c in candidates],
    )
    with (
        _closed_at_end(client, run_id if own_run else ""),
        tempfile.TemporaryDirectory(prefix="radpipe-evaluate-") as tmp,
    ):
        plots = render_plots(Path(tmp) / "plots", model, best, test, evaluation, findings.data, evaluate_config)
        log_evaluation(client, run_id, parent_run_id, evaluation, champion, decision, Path(tmp) / "plots")
        model_info = registration.log_model(
            model, best.spec.with_extra(data_fingerprint=data_fingerprint), test.images[:1], run_id
        )
        tags = version_tags(best, evaluation, decision, parent_run_id, data_fingerprint, run_id)
        with registration.pending_version(  # 5.
            client, name, model_info.model_uri, run_id, tags, model_info.model_id
        ) as pending:
            findings = dataclasses.replace(findings, version=pending.version)
            publish(client, findings, plots, paths, serving_alias(decision.passed, champion, register_config))  # 6.
            pending.complete(describe(best, evaluation, decision, data_fingerprint, run_id))
            registered = pending.move_aliases(  # 7.
                decision.passed, register_config.champion_alias, register_config.challenger_alias
            )
    return EvaluateOutputs(registered, best.name, evaluation, decision)


def select(
    dataset_dir: str, candidate_dirs: list[str], config: EvaluateConfig
) -> tuple[list[Candidate], Candidate, Any, ValidationSplits]:
    """Every trained candidate, the best on validation and its model (an ensemble of the best few when it is
    no worse), and the validation splits it was judged on, for calibration to reuse."""
    candidates = read_candidates(candidate_dirs)
    best = choose(candidates, config.select_by)
    model = load_candidate(best)
    val = ValidationSplits(dataset_dir, best.spec.class_names)
    if config.ensemble > 1:
        best, model = ensembling.consider(
            candidates, best, model, val, config.ensemble, config.batch_size, config.select_by
        )
    return candidates, best, model, val


def score(model: Any, best: Candidate, dataset_dir: str, config: EvaluateConfig) -> tuple[Split, Evaluation]:
    """The test split as ``best`` takes it, and ``model``'s scores on it with bootstrap intervals."""
    test = load_split(dataset_dir, "test", best.spec.preprocessing, best.spec.class_names)
    evaluation = evaluate_split(model, test, config.batch_size, config.calibration_bins)
    if config.bootstrap_samples:
        evaluation.intervals = bootstrap(
            evaluation.labels,
            evaluation.predictions,
            evaluation.class_names,
            config.bootstrap_samples,
            config.confidence_level,
            config.seed,
        )
    logger.info(
        "evaluate: test "
        + " ".join(f"{k}={v:.4f}" for k, v in evaluation.metrics.items() if k != "images")
        + f" on {int(evaluation.metrics['images'])} images"
    )
    return test, evaluation


def gate(
    name: str,
    dataset_dir: str,
    best: Candidate,
    evaluation: Evaluation,
    evaluate_config: EvaluateConfig,
    register_config: RegisterConfig,
) -> tuple[ChampionScore, Decision]:
    """The champion re-scored on the same test split, and the gate's decision against it."""
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
    return champion, decision


def render_plots(
    directory: Path,
    model: Any,
    best: Candidate,
    test: Split,
    evaluation: Evaluation,
    data: DataSummary,
    config: EvaluateConfig,
) -> dict[str, Path]:
    """Every plot as a PNG. A plot that fails stops the stage here, before the registry is touched."""
    trained = best.spec.members[0] if best.spec.is_ensemble else best.spec  # an ensemble's curves: its best member's
    samples = gradcam_samples(model, best.spec, test, evaluation, config.gradcam_per_class)
    plots = plotting.write_plots(
        directory,
        evaluation,
        data.counts,
        list(trained.extra.get("history") or []),
        trained.extra.get("best_epoch"),
        samples,
        config.gradcam_per_class,
    )
    logger.info(f"evaluate: wrote {len(plots)} plots: {', '.join(plots)}")
    return plots


def log_evaluation(
    client: Any,
    run_id: str,
    parent_run_id: str,
    evaluation: Evaluation,
    champion: ChampionScore,
    decision: Decision,
    plots_dir: Path,
) -> None:
    """Test metrics (the champion's beside them) into the candidate's run and the pipeline's, and the full
    evaluation (``evaluation/test.json``) and the plots into the candidate's run."""
    metrics = test_metrics_for_mlflow(evaluation)
    if champion.evaluation is not None:
        metrics.update({f"champion_{k}": v for k, v in test_metrics_for_mlflow(champion.evaluation).items()})
    for target in dict.fromkeys(filter(None, (run_id, parent_run_id))):
        client.log_batch(target, metrics=[_metric(k, v) for k, v in metrics.items()])
    record = {
        "classes": evaluation.class_names,
        "metrics": evaluation.metrics,
        "per_class": evaluation.per_class,
        "confusion": evaluation.confusion,
        "intervals": evaluation.intervals.to_dict() if evaluation.intervals else None,
        "reliability": evaluation.reliability.to_dict() if evaluation.reliability else None,
        "gate": decision.to_dict(),
    }
    client.log_dict(run_id, json_safe(record), "evaluation/test.json")
    client.log_artifacts(run_id, str(plots_dir), PLOTS_ARTIFACT_DIR)


def publish(client: Any, findings: Findings, plots: dict[str, Path], paths: OutputPaths, alias: str) -> None:
    """The model card and the report of the pending version (they name it): as KFP outputs and in its run; then
    its serving manifest, named by the ``alias`` it is about to get, before any alias moves."""
    card = build_model_card(findings)
    page = build_report(findings, card, plots)
    if paths.model_card:
        storage.atomic_write_text(paths.model_card, card)
    if paths.report:
        storage.atomic_write_text(paths.report, page)
    client.log_text(findings.run_id, card, CARD_ARTIFACT)
    client.log_text(findings.run_id, page, REPORT_ARTIFACT)
    if paths.serving_manifest:  # a failure here moves no alias
        deployment.write_serving_manifest(paths.serving_manifest, findings.model_name, findings.version, alias)


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

"""The evaluate-and-register stage as one call.

Choose the best candidate on validation, score it on test, log it to its MLflow run, register a new
version with its provenance as tags, then move aliases; finally close the pipeline's parent run.
"""

from __future__ import annotations

from dataclasses import dataclass

from radpipe import tracking
from radpipe.components.evaluate_and_register.evaluate import (
    Evaluation,
    choose,
    evaluate_split,
    load_candidate,
    read_candidates,
)
from radpipe.components.evaluate_and_register.register import (
    RegisteredVersion,
    apply_alias_policy,
    log_model,
    register_version,
)
from radpipe.config import EvaluateConfig, RegisterConfig, TrackingConfig
from radpipe.dataset import load_split
from radpipe.progress import log


@dataclass
class EvaluateOutputs:
    registered: RegisteredVersion
    aliases: list[str]
    candidate: str
    evaluation: Evaluation


def test_metrics_for_mlflow(evaluation: Evaluation) -> dict[str, float]:
    metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    for name, values in evaluation.per_class.items():
        for key in ("precision", "recall", "f1", "roc_auc"):
            if key in values:
                metrics[f"test_{key}.{name}"] = values[key]
    return metrics


def run(
    dataset_dir: str,
    candidate_dirs: list[str],
    evaluate: dict,
    register: dict,
    track: dict,
    parent_run_id: str,
    data_fingerprint: str,
) -> EvaluateOutputs:
    from mlflow import MlflowClient

    evaluate_config = EvaluateConfig.from_dict(evaluate, "evaluate")
    register_config = RegisterConfig.from_dict(register, "register")
    track_config = TrackingConfig.from_dict(track, "tracking")
    uri = tracking.resolve_tracking_uri(track_config.uri)
    tracking.setup_experiment(uri, track_config.experiment)
    client = MlflowClient()
    try:
        candidates = read_candidates(candidate_dirs)
        best = choose(candidates)
        model = load_candidate(best)
        test = load_split(dataset_dir, "test", best.spec.preprocessing, best.spec.class_names)
        evaluation = evaluate_split(model, test, evaluate_config.batch_size)
        log(
            "evaluate: test "
            + " ".join(f"{k}={v:.4f}" for k, v in evaluation.metrics.items() if k != "images")
            + f" on {int(evaluation.metrics['images'])} images"
        )
        metrics = test_metrics_for_mlflow(evaluation)
        for run_id in filter(None, {best.run_id, parent_run_id}):
            client.log_batch(run_id, metrics=[_metric(k, v) for k, v in metrics.items()])
        if best.run_id:
            client.log_dict(
                best.run_id,
                {
                    "per_class": evaluation.per_class,
                    "confusion": evaluation.confusion,
                    "classes": evaluation.class_names,
                },
                "evaluation/test.json",
            )
        model_info = log_model(
            model, best.spec.with_extra(data_fingerprint=data_fingerprint), test.images[:1], best.run_id
        )
        tags = {
            "radpipe.data_fingerprint": data_fingerprint,
            "radpipe.candidate": best.name,
            "radpipe.parent_run_id": parent_run_id,
            "radpipe.backbone": best.spec.backbone,
            **{f"radpipe.{k}": f"{v:.4f}" for k, v in best.val_metrics.items()},
            **{f"radpipe.test_{k}": f"{v:.4f}" for k, v in evaluation.metrics.items() if k != "images"},
        }
        description = (
            f"{best.spec.backbone} candidate '{best.name}': test accuracy {evaluation.metrics['accuracy']:.3f}, "
            f"macro-F1 {evaluation.metrics['macro_f1']:.3f} on {int(evaluation.metrics['images'])} images; "
            f"data {data_fingerprint[:12]}. Research use only, not for clinical use."
        )
        registered = register_version(model_info, register_config.model_name, best.run_id, tags, description)
        aliases = apply_alias_policy(registered)
    except BaseException:
        if parent_run_id:
            client.set_terminated(parent_run_id, status="FAILED")
        raise
    if parent_run_id:
        client.set_tag(parent_run_id, "radpipe.registered", registered.uri)
        client.set_tag(parent_run_id, "radpipe.chosen_candidate", best.name)
        client.set_terminated(parent_run_id, status="FINISHED")
    return EvaluateOutputs(registered, aliases, best.name, evaluation)


def _metric(key: str, value: float):
    import time

    from mlflow.entities import Metric

    return Metric(key=key, value=float(value), timestamp=int(time.time() * 1000), step=0)

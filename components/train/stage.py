"""The train stage as one call: resolve the candidate's config, train inside an MLflow child run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from radpipe import provenance, tracking
from radpipe.components.train.train import judged_loss, train_model
from radpipe.config import ModelConfig, TrackingConfig, TrainConfig, resolve_candidate


@dataclass(frozen=True)
class TrainOutputs:
    run_id: str
    candidate: str
    val_metrics: dict[str, float]
    best_epoch: int
    seconds: float


def run(
    dataset_dir: str,
    base_dir: str,
    model: dict,
    train: dict,
    candidate: dict,
    track: dict,
    parent_run_id: str,
    output_dir: str,
) -> TrainOutputs:
    import mlflow

    model_config, train_config = resolve_candidate(
        ModelConfig.from_dict(model, "model"), TrainConfig.from_dict(train, "train"), candidate
    )
    name = str(candidate.get("name") or "default")
    track_config = TrackingConfig.from_dict(track, "tracking")
    uri = tracking.resolve_tracking_uri(track_config.uri)
    experiment_id = tracking.setup_experiment(uri, track_config.experiment)
    tags = {"radpipe.role": "candidate", "radpipe.candidate": name, **provenance.versions()}
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=name, parent_run_id=parent_run_id or None, tags=tags
    ) as active:
        tracking.record_run(active.info.run_id)
        params: dict[str, Any] = {
            **tracking.flatten("model", model_config.to_dict()),
            **tracking.flatten("train", train_config.to_dict()),
            "candidate": name,
        }
        mlflow.log_params({k: "" if v is None else v for k, v in params.items()})

        def on_epoch(record: dict[str, Any]) -> None:
            metrics = {k: v for k, v in record.items() if k not in ("epoch", "phase")}
            mlflow.log_metrics(metrics, step=record["epoch"])

        result = train_model(
            base_dir,
            dataset_dir,
            train_config,
            output_dir,
            on_epoch=on_epoch,
            extra={"candidate": name, "mlflow_run_id": active.info.run_id},
        )
        # Per-epoch series are loss/accuracy/val_loss/val_accuracy; the restored best epoch's are "best_*".
        best = {f"best_{k}": v for k, v in result.val_metrics.items()}
        mlflow.log_metrics({**best, "best_epoch": result.best_epoch, "train_seconds": result.seconds})
        mlflow.log_dict({"history": result.history}, "training/history.json")
        mlflow.set_tag("radpipe.train.ended", "\n".join(result.spec.extra.get("phase_ends", [])))
        if "logistic_head" in result.spec.extra:  # every C tried, and the one kept
            tried = result.spec.extra["logistic_head"]
            mlflow.log_dict({"tried": tried}, "training/logistic_head.json")
            mlflow.log_param("train.head_c_kept", min(tried, key=judged_loss)["c"])
        if "features" in result.spec.extra:
            features = result.spec.extra["features"]
            mlflow.set_tags(
                {
                    "radpipe.features_key": features["key"],
                    "radpipe.features_cache_hit": str(features["cache_hit"]).lower(),
                }
            )
        return TrainOutputs(active.info.run_id, name, result.val_metrics, result.best_epoch, result.seconds)

"""The ingest stage as one call: validate config, ingest, open the pipeline's MLflow parent run.

Ingest opens the parent run because it is the first stage of every pipeline run: the data set it
logs there (fingerprint, class counts, the report) is what every candidate's child run trains on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from radpipe import __version__, tracking
from radpipe.components.ingest.ingest import MANIFEST, IngestReport, ingest
from radpipe.config import DataConfig, TrackingConfig


@dataclass(frozen=True)
class IngestResult:
    """What the stage hands its KFP wrapper (which returns it as the ``IngestOutputs`` named tuple)."""

    fingerprint: str
    class_names: list[str]
    parent_run_id: str


def log_parent_run(
    report: IngestReport, data: DataConfig, track: TrackingConfig, dataset_dir: Path, pipeline_job: str
) -> str:
    """Start the pipeline's MLflow parent run with the data set logged; return its id (the run stays open
    server-side as RUNNING until evaluate-and-register ends it)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    uri = tracking.resolve_tracking_uri(track.uri)
    experiment_id = tracking.setup_experiment(uri, track.experiment)
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=pipeline_job or None,
        tags={
            "radpipe.role": "pipeline",
            "radpipe.version": __version__,
            "radpipe.kfp_run": pipeline_job,
            "radpipe.data_fingerprint": report.fingerprint,
        },
    )
    run_id = run.info.run_id
    tracking.record_run(run_id)
    params = tracking.flatten("data", data.to_dict())
    params["data.classes"] = ",".join(report.class_names)
    for key, value in params.items():
        client.log_param(run_id, key, "" if value is None else str(value)[:6000])
    for split, per_class in report.counts.items():
        client.log_metric(run_id, f"data.{split}.images", sum(per_class.values()))
    client.log_metric(run_id, "data.removed_cross_split_duplicates", len(report.removed_cross_split_duplicates))
    client.log_metric(run_id, "data.removed_conflicting_labels", len(report.removed_conflicting_labels))
    client.log_metric(run_id, "data.unreadable", len(report.unreadable))
    client.log_metric(run_id, "data.removed_near_duplicates", len(report.removed_near_duplicates))
    for pair, n in report.near_duplicates.get("found", {}).items():
        client.log_metric(run_id, f"data.near_duplicate_pairs.{pair}", n)
    client.log_metric(run_id, "data.removed_same_patient", len(report.removed_same_patient))
    client.log_metric(run_id, "data.dicom_files", report.dicom.get("files", 0))
    if report.grouping:
        client.log_metric(run_id, "data.groups", report.grouping["groups"])
        client.log_metric(run_id, "data.groups_across_splits", report.grouping["across_splits"])
    client.log_artifact(run_id, str(dataset_dir / MANIFEST), "dataset")
    with mlflow.start_run(run_id=run_id):
        source = resolve_dataset_source(str(Path(data.uri).resolve()) if "://" not in data.uri else data.uri)
        mlflow.log_input(MetaDataset(source, name="dataset", digest=report.fingerprint[:36]), context="training")
    # start_run's exit marks the run FINISHED; it is the pipeline's run, so keep it RUNNING until the end.
    client.update_run(run_id, status="RUNNING")
    return run_id


def run(data: dict, track: dict, output_dir: str, pipeline_job: str = "") -> IngestResult:
    data_config = DataConfig.from_dict(data, "data")
    track_config = TrackingConfig.from_dict(track, "tracking")
    with tempfile.TemporaryDirectory(prefix="radpipe-ingest-") as workdir:
        report = ingest(data_config, output_dir, workdir)
    parent = log_parent_run(report, data_config, track_config, Path(output_dir), pipeline_job)
    return IngestResult(report.fingerprint, report.class_names, parent)

"""KFP wrapper of the train stage; the logic is in ``train.py``.

Runs in the ``radpipe-train`` image (``images/Dockerfile``), the heavy one (TensorFlow).
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

IMAGE = "radpipe-train"


def train(
    dataset: Input[Dataset],
    base_model: Input[Model],
    model: dict,
    train: dict,
    candidate: dict,
    tracking: dict,
    trained_model: Output[Model],
    val_metrics: Output[Metrics],
):
    """Train one candidate (the head on frozen features, then optional fine-tuning) in an MLflow child run.

    Args:
        dataset: The ingested image set (train and validation splits).
        base_model: prepare-base's untrained classifier for this candidate.
        model: The ``model`` section of the radpipe config (image size, backbone).
        train: The ``train`` section: epochs of each phase, learning rates, early stopping, augmentation,
            seed, feature cache.
        candidate: This candidate of the search: its ``name`` and overrides of ``model``/``train``.
        tracking: The ``tracking`` section: MLflow ``uri`` (else ``MLFLOW_TRACKING_URI``) and experiment.

    Returns:
        trained_model: The trained classifier (``model.keras`` + ``radpipe.json``); its metadata carries
            the candidate's name, MLflow run id, best epoch and validation scores.
        val_metrics: Validation accuracy, macro-F1 and log loss of the restored best epoch.
    """
    from radpipe.errors import stage_errors

    with stage_errors("train"):
        from radpipe.components.train import stage

        result = stage.run(
            dataset_dir=dataset.path,
            base_dir=base_model.path,
            model=model,
            train=train,
            candidate=candidate,
            track=tracking,
            parent_run_id=dataset.metadata.get("mlflow_parent_run_id", ""),
            output_dir=trained_model.path,
        )
    for name, value in result.val_metrics.items():
        val_metrics.log_metric(name, value)
    val_metrics.log_metric("best_epoch", result.best_epoch)
    trained_model.metadata.update(
        {
            "candidate": result.candidate,
            "mlflow_run_id": result.run_id,
            "best_epoch": result.best_epoch,
            **result.val_metrics,
        }
    )

"""KFP wrapper of the train stage; the logic is in ``train.py``.

Runs in the ``radpipe-train`` image (``images/train/Dockerfile``), the heavy one (TensorFlow).
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
    """Train one candidate (frozen head, then optional fine-tuning) inside an MLflow child run."""
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

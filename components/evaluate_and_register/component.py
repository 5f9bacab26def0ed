"""KFP wrapper of the evaluate-and-register stage; the logic is in ``evaluate.py`` and ``register.py``.

Runs in the ``radpipe-evaluate-and-register`` image (``images/evaluate-and-register/Dockerfile``).
"""

from typing import NamedTuple

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

IMAGE = "radpipe-evaluate-and-register"


def evaluate_and_register(
    dataset: Input[Dataset],
    candidates: Input[list[Model]],
    evaluate: dict,
    register: dict,
    tracking: dict,
    parent_run_id: str,
    data_fingerprint: str,
    test_metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
) -> NamedTuple(
    "RegisterOutputs",
    [
        ("model_uri", str),
        ("model_name", str),
        ("model_version", str),
        ("aliases", list),
        ("candidate", str),
        ("test_accuracy", float),
        ("test_macro_f1", float),
    ],
):
    """Choose the best candidate on validation, score it on test, register it in MLflow, move aliases."""
    from collections import namedtuple

    from radpipe.components.evaluate_and_register import stage
    from radpipe.components.evaluate_and_register.evaluate import micro_roc
    from radpipe.errors import stage_errors

    with stage_errors("evaluate-and-register"):
        result = stage.run(
            dataset_dir=dataset.path,
            candidate_dirs=[c.path for c in candidates],
            evaluate=evaluate,
            register=register,
            track=tracking,
            parent_run_id=parent_run_id,
            data_fingerprint=data_fingerprint,
        )
    evaluation = result.evaluation
    for name, value in evaluation.metrics.items():
        test_metrics.log_metric(name, value)
    classification.log_confusion_matrix(evaluation.class_names, evaluation.confusion)
    classification.log_roc_curve(*micro_roc(evaluation))
    outputs = namedtuple(
        "RegisterOutputs",
        ["model_uri", "model_name", "model_version", "aliases", "candidate", "test_accuracy", "test_macro_f1"],
    )
    return outputs(
        result.registered.uri,
        result.registered.name,
        result.registered.version,
        result.aliases,
        result.candidate,
        evaluation.metrics["accuracy"],
        evaluation.metrics["macro_f1"],
    )

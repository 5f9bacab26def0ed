"""KFP wrapper of the evaluate-and-register stage; the logic is in ``stage.py`` and the modules it calls.

Runs in the ``radpipe-evaluate-and-register`` image (``images/Dockerfile``). What
the KFP UI shows for this task: ``test_metrics`` (scalars), ``classification`` (confusion matrix and ROC
curve), ``report`` (the HTML report with every plot and the model card), ``model_card`` (Markdown),
``serving_manifest`` (the KServe InferenceService of the new version, for ``kubectl apply -f``).
"""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

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
    report: Output[HTML],
    model_card: Output[Markdown],
    serving_manifest: Output[Artifact],
) -> NamedTuple(
    "RegisterOutputs",
    [
        ("model_uri", str),
        ("model_name", str),
        ("model_version", str),
        ("aliases", list),
        ("gate", str),
        ("candidate", str),
        ("test_accuracy", float),
        ("test_macro_f1", float),
    ],
):
    """Choose the best candidate on validation, score it on test against the champion, register it in MLflow,
    and move the challenger alias only if it passes the gate.

    Args:
        dataset: The ingested image set (validation and test splits).
        candidates: Every trained candidate of the search.
        evaluate: The ``evaluate`` section of the radpipe config: selection score, ensemble, calibration,
            bootstrap intervals, Grad-CAM.
        register: The ``register`` section: registered model name and the gate's thresholds.
        tracking: The ``tracking`` section: MLflow ``uri`` (else ``MLFLOW_TRACKING_URI``) and experiment.
        parent_run_id: The MLflow parent run ingest opened; closed here, FINISHED or FAILED.
        data_fingerprint: ingest's fingerprint of the image set, recorded on the version.

    Returns:
        test_metrics: Test scores of the registered model, with 95 % bootstrap intervals.
        classification: Test confusion matrix and ROC curve, drawn by the KFP UI.
        report: The HTML report: every plot, the gate's reasons, the model card.
        model_card: The model card (Markdown): data, training, per-class metrics, limits.
        serving_manifest: The KServe InferenceService serving the new version (``kubectl apply -f``).
        model_uri: ``models:/NAME/VERSION`` of the new version.
        model_name: The registered model's name.
        model_version: The new version's number.
        aliases: The aliases the new version holds after this run (``challenger``, ``champion``, or none).
        gate: ``passed`` or ``failed``: whether the version became the challenger.
        candidate: The chosen candidate's name (or the ensemble of several).
        test_accuracy: Test accuracy of the new version.
        test_macro_f1: Test macro-F1 of the new version.
    """
    from collections import namedtuple

    from radpipe.errors import stage_errors
    from radpipe.json_safe import finite_metrics

    with stage_errors("evaluate-and-register"):
        from radpipe.components.evaluate_and_register import stage
        from radpipe.components.evaluate_and_register.evaluate import micro_roc

        result = stage.run(
            dataset_dir=dataset.path,
            candidate_dirs=[c.path for c in candidates],
            evaluate=evaluate,
            register=register,
            track=tracking,
            parent_run_id=parent_run_id,
            data_fingerprint=data_fingerprint,
            report_path=report.path,
            model_card_path=model_card.path,
            serving_manifest_path=serving_manifest.path,
        )
    evaluation = result.evaluation
    scalars = dict(evaluation.metrics)
    if evaluation.intervals is not None:
        for key, (low, high) in evaluation.intervals.overall.items():
            scalars[f"{key}_ci_low"], scalars[f"{key}_ci_high"] = low, high
    for name, value in finite_metrics(scalars).items():  # KFP metadata is JSON: no NaN
        test_metrics.log_metric(name, value)
    classification.log_confusion_matrix(evaluation.class_names, evaluation.confusion)
    classification.log_roc_curve(*micro_roc(evaluation))
    report.metadata.update({"model_uri": result.registered.uri, "gate": result.decision.verdict})
    model_card.metadata.update({"model_uri": result.registered.uri})
    serving_manifest.metadata.update({"model_uri": result.registered.uri})
    outputs = namedtuple(
        "RegisterOutputs",
        ["model_uri", "model_name", "model_version", "aliases", "gate", "candidate", "test_accuracy", "test_macro_f1"],
    )
    return outputs(
        result.registered.uri,
        result.registered.name,
        result.registered.version,
        result.aliases,
        result.decision.verdict,
        result.candidate,
        evaluation.metrics["accuracy"],
        evaluation.metrics["macro_f1"],
    )

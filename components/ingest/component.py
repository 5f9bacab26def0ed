"""KFP wrapper of the ingest stage; the logic is in ``stage.py`` and ``ingest.py``.

The function body is shipped inside the compiled pipeline and runs in the ``radpipe-ingest`` image
(``images/Dockerfile``), which has radpipe installed: keep it to imports and one call.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Output

IMAGE = "radpipe-ingest"


def ingest(
    data: dict,
    tracking: dict,
    pipeline_job: str,
    dataset: Output[Dataset],
) -> NamedTuple("IngestOutputs", [("fingerprint", str), ("class_names", list), ("parent_run_id", str)]):
    """Normalise a folder-per-class image set into train/val/test splits with a manifest and a fingerprint.

    Args:
        data: The ``data`` section of the radpipe config (docs/configuration.md): ``uri`` of the image set
            (a folder, ``s3://`` prefix or ``.zip``/``.tar.gz`` URL, one folder per class, optionally split
            into train/valid/test), split fractions, seed, class map.
        tracking: The ``tracking`` section: MLflow ``uri`` (else ``MLFLOW_TRACKING_URI``) and experiment.
        pipeline_job: The KFP pipeline job's name, recorded on the MLflow parent run this stage opens.

    Returns:
        dataset: The normalised image set: ``train/``, ``val/``, ``test/`` with one folder per class, and
            ``manifest.json`` (every file, its split, class and checksum; what was dropped and why).
        fingerprint: A digest of the normalised set's files and splits: equal fingerprints, equal data.
        class_names: The classes, in the order of the model's outputs.
        parent_run_id: The MLflow parent run of this pipeline run; evaluate-and-register closes it.
    """
    from collections import namedtuple

    from radpipe.errors import stage_errors

    with stage_errors("ingest"):
        from radpipe.components.ingest import stage

        result = stage.run(data=data, track=tracking, output_dir=dataset.path, pipeline_job=pipeline_job)
    # Steps inside the candidates' ParallelFor read these from the artifact, not from output parameters:
    # kfp.local 2.17.0 replaces task-output parameters inside a loop with the loop item.
    dataset.metadata.update(
        {"fingerprint": result.fingerprint, "classes": result.class_names, "mlflow_parent_run_id": result.parent_run_id}
    )
    outputs = namedtuple("IngestOutputs", ["fingerprint", "class_names", "parent_run_id"])
    return outputs(result.fingerprint, result.class_names, result.parent_run_id)

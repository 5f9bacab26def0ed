"""KFP wrapper of the ingest stage; the logic is in ``stage.py`` and ``ingest.py``.

The function body is shipped inside the compiled pipeline and runs in the ``radpipe-ingest`` image
(``images/ingest/Dockerfile``), which has radpipe installed: keep it to imports and one call.
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
    """Normalise a folder-per-class image set into train/val/test with a manifest and fingerprint."""
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

"""KFP wrapper of the prepare-base stage; the logic is in ``prepare_base.py`` and ``backbones.py``.

Runs in the ``radpipe-prepare-base`` image (``images/Dockerfile``).
"""

from kfp.dsl import Dataset, Input, Model, Output

IMAGE = "radpipe-prepare-base"


def prepare_base(dataset: Input[Dataset], model: dict, candidate: dict, base_model: Output[Model]):
    """A keras.applications backbone with pretrained weights and a new head for the data set's classes.

    Args:
        dataset: The ingested image set (for its class names).
        model: The ``model`` section of the radpipe config: ``backbone``, ``weights`` (``imagenet``, ``none``
            or a weights file path/URI: never a silent fall-back to random weights), ``image_size``, head.
        candidate: This candidate of the search: its ``name`` and overrides of ``model``/``train``.

    Returns:
        base_model: The untrained classifier: ``model.keras`` and its record ``radpipe.json`` (class names,
            preprocessing, backbone, where the weights came from).
    """
    from radpipe.errors import stage_errors

    with stage_errors("prepare-base"):
        from radpipe.components.prepare_base import stage

        spec = stage.run(model=model, candidate=candidate, dataset_dir=dataset.path, output_dir=base_model.path)
    base_model.metadata.update(
        {
            "backbone": spec.backbone,
            "weights": spec.weights,
            "image_size": spec.preprocessing.image_size,
            "classes": spec.class_names,
            "candidate": candidate.get("name", ""),
        }
    )

"""KFP wrapper of the prepare-base stage; the logic is in ``prepare_base.py`` and ``backbones.py``.

Runs in the ``radpipe-prepare-base`` image (``images/prepare-base/Dockerfile``).
"""

from kfp.dsl import Dataset, Input, Model, Output

IMAGE = "radpipe-prepare-base"


def prepare_base(dataset: Input[Dataset], model: dict, candidate: dict, base_model: Output[Model]):
    """A keras.applications backbone with pretrained weights and a new head for the data set's classes."""
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

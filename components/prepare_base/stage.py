"""The prepare-base stage as one call: resolve the candidate's model config, build, save."""

from __future__ import annotations

import tempfile

from radpipe.components.prepare_base.prepare_base import prepare_base
from radpipe.config import ModelConfig, TrainConfig, resolve_candidate
from radpipe.dataset import read_manifest
from radpipe.modelspec import ModelSpec


def run(model: dict, candidate: dict, dataset_dir: str, output_dir: str) -> ModelSpec:
    """Build the candidate's base model for the classes of the ingested data set in ``dataset_dir``."""
    model_config, _ = resolve_candidate(ModelConfig.from_dict(model, "model"), TrainConfig(), candidate)
    class_names = read_manifest(dataset_dir)["classes"]
    with tempfile.TemporaryDirectory(prefix="radpipe-prepare-base-") as workdir:
        return prepare_base(model_config, [str(c) for c in class_names], output_dir, workdir)

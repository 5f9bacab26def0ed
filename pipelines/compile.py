"""Compile the pipeline to the YAML that KFP's UI, ``kfp.Client`` and ``make submit`` take."""

from __future__ import annotations

import ast
import re
import tempfile
from pathlib import Path
from typing import Any

from radpipe import storage
from radpipe.config import Config
from radpipe.pipelines.training_pipeline import DEFAULT_IMAGE_TAG, build_pipeline

COMPILED_PIPELINE = Path(__file__).with_name("radpipe-training.yaml")


def compile_pipeline(
    output: str | Path = COMPILED_PIPELINE,
    config: Config | None = None,
    image_registry: str = "",
    image_tag: str = DEFAULT_IMAGE_TAG,
    cluster_env: bool = True,
) -> Path:
    """Write the compiled pipeline to ``output`` (atomically) and return its path."""
    from kfp import compiler

    output = Path(output)
    pipeline = build_pipeline(config, image_registry=image_registry, image_tag=image_tag, cluster_env=cluster_env)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(staged))
        storage.atomic_write_text(output, stable_header(staged.read_text()))
    return output


_DEFAULT = re.compile(r"^(#\s+\S+: \w+ \[Default: )(.*)(\])$")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def stable_header(text: str) -> str:
    """KFP's comment header prints STRUCT defaults in protobuf map order, which changes between runs;
    sort them so that compiling twice gives the same file (the YAML body is already stable)."""
    lines = []
    for line in text.splitlines(keepends=True):
        match = _DEFAULT.match(line.rstrip("\n"))
        if match and line.startswith("#"):
            try:
                value = ast.literal_eval(match.group(2))
            except (ValueError, SyntaxError):
                lines.append(line)
                continue
            line = f"{match.group(1)}{_sorted(value)!r}{match.group(3)}\n"
        lines.append(line)
    return "".join(lines)

"""Versions and source revision recorded on every MLflow run, so a result can be reproduced."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

from radpipe import __version__


@functools.cache
def git_commit() -> str:
    """``RADPIPE_GIT_COMMIT`` (baked into images at build time), else the checkout radpipe runs from."""
    if os.environ.get("RADPIPE_GIT_COMMIT"):
        return os.environ["RADPIPE_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Tags for an MLflow run: radpipe, Python, TensorFlow, Keras, MLflow, the git commit."""
    tags = {
        "radpipe.version": __version__,
        "radpipe.git_commit": git_commit(),
        "python.version": platform.python_version(),
    }
    for module in ("tensorflow", "keras", "mlflow", "numpy"):
        try:
            tags[f"{module}.version"] = __import__(module).__version__
        except ImportError:
            continue
    return tags

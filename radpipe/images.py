"""The container images radpipe runs in, by name: one per pipeline stage, one for serving.

``images/<name>/Dockerfile`` builds each (``make images``); the compiled pipeline and the serving
manifest refer to them as ``[registry/]radpipe-<name>:<tag>``. The registry and tag are chosen when the
pipeline is compiled or the manifest rendered, so the same code serves a kind cluster (no registry, images
loaded with ``make kind-load``) and a cluster pulling from ``ghcr.io/<org>``.
"""

from __future__ import annotations

from radpipe import __version__

DEFAULT_TAG = __version__

# images/<folder> -> image name. The stage names are the pipeline's task names.
STAGE_IMAGES = {
    "ingest": "radpipe-ingest",
    "prepare-base": "radpipe-prepare-base",
    "train": "radpipe-train",
    "evaluate-and-register": "radpipe-evaluate-and-register",
}
SERVING_IMAGE = "radpipe-serving"
MLFLOW_IMAGE = "radpipe-mlflow"
IMAGES = {**STAGE_IMAGES, "serving": SERVING_IMAGE, "mlflow": MLFLOW_IMAGE}

# The non-root user every image runs as (images/*/Dockerfile); manifests and pipeline tasks set the same.
USER_ID = 10001


def image_ref(image: str, registry: str = "", tag: str = DEFAULT_TAG) -> str:
    """``[registry/]image:tag``, e.g. ``radpipe-train:0.1.0`` or ``ghcr.io/acme/radpipe-train:0.1.0``."""
    prefix = registry.rstrip("/") + "/" if registry else ""
    return f"{prefix}{image}:{tag}"

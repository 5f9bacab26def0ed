"""The container images radpipe runs in, by name: one per pipeline stage, one for serving, one for MLflow.

``images/Dockerfile`` builds the stage and serving images (``make images``), ``images/mlflow/Dockerfile``
the tracking server; the compiled pipeline and the serving manifest refer to them as
``[registry/]radpipe-<name>:<tag>``. The registry and tag are chosen when the pipeline is compiled or the
manifest rendered, so the same code serves a kind cluster (no registry, images loaded with ``make
kind-load``) and a cluster pulling from ``ghcr.io/<org>``.

Kept free of third-party imports: ``make images`` runs ``python3 -m radpipe.images digest IMAGE`` with any
Python, before the project's environment exists.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

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

DOCKERFILE = "images/Dockerfile"
"""Builds every radpipe image (the stages' and serving's), selected by ``--build-arg IMAGE`` and a target."""
BUILD_SPECS = {
    **{name: (DOCKERFILE, "stage") for name in STAGE_IMAGES},
    "serving": (DOCKERFILE, "serving"),
    "mlflow": ("images/mlflow/Dockerfile", ""),
}
"""image folder -> (Dockerfile, build target): what ``images/build.sh`` runs for each image."""

# The non-root user every image runs as (images/Dockerfile); manifests and pipeline tasks set the same.
USER_ID = 10001

SOURCE_DIGEST_LABEL = "io.radpipe.source-digest"
"""Label of every radpipe image built by ``make images``: :func:`source_digest` of what it was built from."""
SOURCE_FOLDERS = ("radpipe", "components", "pipelines", "serving")
"""The folders whose files become the radpipe wheel inside each image (pyproject's package-dir)."""


def image_ref(image: str, registry: str = "", tag: str = DEFAULT_TAG) -> str:
    """``[registry/]image:tag``, e.g. ``radpipe-train:0.1.0`` or ``ghcr.io/acme/radpipe-train:0.1.0``."""
    prefix = registry.rstrip("/") + "/" if registry else ""
    return f"{prefix}{image}:{tag}"


def source_digest(repo: str | Path, image: str) -> str:
    """A digest of what ``image`` is built from in the checkout at ``repo``: radpipe's sources,
    ``pyproject.toml`` and the image's lock.

    A run in containers compares it with the image's label, so that an image built before the code changed
    is refused with "rebuild it" instead of running yesterday's code.
    """
    repo = Path(repo)
    files = [repo / "pyproject.toml", repo / "images" / image / "requirements.lock"]
    for folder in SOURCE_FOLDERS:
        files += sorted(
            p for p in (repo / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest() if path.exists() else b"missing")
    return digest.hexdigest()[:16]


def main(argv: list[str]) -> int:
    """``python3 -m radpipe.images digest IMAGE`` (the source digest ``make images`` labels IMAGE with) or
    ``python3 -m radpipe.images build-spec IMAGE`` (its Dockerfile and build target)."""
    if len(argv) != 2 or argv[0] not in ("digest", "build-spec") or argv[1] not in IMAGES:
        print(f"usage: python3 -m radpipe.images {{digest,build-spec}} {{{','.join(IMAGES)}}}", file=sys.stderr)
        return 2
    if argv[0] == "digest":
        print(source_digest(Path(__file__).resolve().parents[1], argv[1]))
    else:
        print(*BUILD_SPECS[argv[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

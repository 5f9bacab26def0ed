#!/usr/bin/env bash
# Build radpipe's container images from the repository root: images/build.sh [IMAGE ...] (default: all six).
# `make images` calls this; its variables are the environment here:
#   IMAGE_REGISTRY   prefix, e.g. ghcr.io/acme (default: none, images are radpipe-<name>:<tag>)
#   IMAGE_TAG        default: radpipe's version
#   BASE_IMAGE       the Python base (default: the pinned python:3.11 slim image in the Dockerfiles);
#                    on a host that cannot pull, `make base-image` and BASE_IMAGE=radpipe-base:bookworm-py3.11
#   PIP_INDEX_URL    a package index mirror for pip inside the build
#   DOCKER           the docker command (default: docker)
#   DOCKER_BUILDKIT  1 BuildKit, 0 the classic builder (default: BuildKit where `docker buildx` works)
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-docker}"
PYTHON="${PYTHON:-python3}"
IMAGE_TAG="${IMAGE_TAG:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' radpipe/__init__.py)}"
prefix="${IMAGE_REGISTRY:+${IMAGE_REGISTRY%/}/}"
if [ -z "${DOCKER_BUILDKIT:-}" ]; then
  if $DOCKER buildx version >/dev/null 2>&1; then DOCKER_BUILDKIT=1; else DOCKER_BUILDKIT=0; fi
fi
export DOCKER_BUILDKIT

images=("$@")
[ ${#images[@]} -gt 0 ] || images=(ingest prepare-base train evaluate-and-register serving mlflow)

for image in "${images[@]}"; do
  spec="$(PYTHONPATH=. "$PYTHON" -m radpipe.images build-spec "$image")" || exit 2
  read -r dockerfile target <<<"$spec"
  ref="${prefix}radpipe-${image}:${IMAGE_TAG}"
  args=(-f "$dockerfile" -t "$ref")
  if [ -n "$target" ]; then  # radpipe's own images: which one, and what it is built from
    args+=(--target "$target" --build-arg "IMAGE=$image"
           --build-arg "SOURCE_DIGEST=$(PYTHONPATH=. "$PYTHON" -m radpipe.images digest "$image")")
  fi
  [ -z "${BASE_IMAGE:-}" ] || args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  [ -z "${PIP_INDEX_URL:-}" ] || args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  builder=$([ "$DOCKER_BUILDKIT" = 1 ] && echo BuildKit || echo "classic builder")
  echo "== $ref ($builder${BASE_IMAGE:+, base $BASE_IMAGE})"
  started=$(date +%s)
  $DOCKER build "${args[@]}" .
  size=$($DOCKER image inspect -f '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}')
  echo "== built $ref in $(( $(date +%s) - started )) s, $size"
done

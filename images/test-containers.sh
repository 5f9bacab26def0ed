#!/usr/bin/env bash
# `make test-containers`: build every image and run it for real, then tests/test_containers.py.
#  1. a Docker daemon (images/docker-daemon.sh: the running one, or dockerd started here and stopped at the end);
#  2. the base: the pinned python image if it can be pulled, else one from the Debian mirror (make base-image);
#  3. make images; 4. kserve-storage (KServe's storage initializer code) in its own venv, .kserve-storage/;
#  5. pytest -m containers: the pipeline through --runner docker against the subprocess runner, the serving
#     container as KServe runs it, answering tritonclient.
# Without a daemon (no root to start one) the tests still run and skip, saying why.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
PYTHON="${PYTHON:-python3}"
LOCAL_BASE_IMAGE="${LOCAL_BASE_IMAGE:-radpipe-base:bookworm-py3.11}"
started=$(date +%s)
step() { echo "== test-containers: $* ($(( $(date +%s) - started )) s)"; }

if images/docker-daemon.sh start; then
  trap 'images/docker-daemon.sh stop' EXIT
  if [ -z "${BASE_IMAGE:-}" ]; then
    default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' images/Dockerfile)"
    if docker image inspect "$default_base" >/dev/null 2>&1 || timeout 120 docker pull -q "$default_base" >/dev/null 2>&1; then
      BASE_IMAGE="$default_base"
    else
      step "cannot pull $default_base: building $LOCAL_BASE_IMAGE from the Debian mirror"
      docker image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1 || images/base/build.sh "$LOCAL_BASE_IMAGE" || exit 1
      BASE_IMAGE="$LOCAL_BASE_IMAGE"
    fi
  fi
  export BASE_IMAGE
  step "images on $BASE_IMAGE"
  images/build.sh || exit 1
  if [ ! -f .kserve-storage/.installed ]; then
    step "kserve-storage in .kserve-storage/"
    "$PYTHON" -m venv .kserve-storage && .kserve-storage/bin/python -m pip install -q "kserve-storage==0.21.0" \
      && touch .kserve-storage/.installed || exit 1
  fi
fi
step "pytest -m containers"
TF_CPP_MIN_LOG_LEVEL=2 "$BIN/python" -m pytest -m containers ${PYTEST_ARGS:-}
status=$?
step "done (pytest exit $status)"
exit $status

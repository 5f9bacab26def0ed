# radpipe: `make demo` and `make test` set everything up themselves on a fresh clone.
# Everything lives in .venv (the project) and .tools (static checkers that pin conflicting versions).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.10 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
KERAS_MODELS := $(or $(KERAS_HOME),$(HOME)/.keras)/models
SHARED_WEIGHTS ?= ../shared/weights
PYTEST_ARGS ?=
# Test processes (pytest-xdist), a test file each at a time. Two keep CI's two cores busy: alone, the suite
# uses one (imports and task processes are single-threaded). Each worker holds TensorFlow: about 2 GB.
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install demo dicom-demo test test-deps lint format compile seed-weights clean
.PHONY: tools constraints image-locks images base-image test-containers kind-load cluster-up cluster-down submit deploy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: no python3 found; install Python 3.10-3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	@touch $@

install: $(INSTALLED) ## create .venv and install radpipe with its test tools

# Keras looks for ImageNet weights in its cache and downloads them when missing. Where there is no
# internet (CI, air-gapped hospital networks) the cache can be seeded; radpipe itself never needs this.
seed-weights: ## copy ../shared/weights/*.h5 into the Keras cache, if that folder exists
	@if [ -d "$(SHARED_WEIGHTS)" ]; then \
	  mkdir -p "$(KERAS_MODELS)"; \
	  for f in "$(SHARED_WEIGHTS)"/*.h5; do \
	    [ -e "$(KERAS_MODELS)/$$(basename "$$f")" ] || { cp "$$f" "$(KERAS_MODELS)/" && echo "seeded $(KERAS_MODELS)/$$(basename "$$f")"; }; \
	  done; \
	fi

demo: install seed-weights ## run the whole pipeline locally on the bundled sample and print what it registered
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/radpipe run --config examples/demo.yaml

dicom-demo: install seed-weights ## the demo on DICOM: write examples/dicom-demo-data/ from the sample, run the pipeline
	$(BIN)/python examples/make_dicom_demo.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/radpipe run --config examples/dicom-demo.yaml

# The serving page is tested in headless Chromium (Debian's package). Without root it is skipped, and so
# are those tests (they say why).
test-deps: ## install headless Chromium for the upload-page tests (Debian/Ubuntu, as root)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is not installed and this is not root with apt-get: the upload-page tests will skip"; fi; }

test: install test-deps tools ## lint, then run the test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -m "not containers" -n $(PYTEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: install ## recompile pipelines/radpipe-training.yaml
	$(BIN)/radpipe compile

# ------------------------------------------------------------------------------------------- cluster
# The kind path of docs/cluster.md. Nothing here runs in `make test`, which checks it statically.
TOOLS ?= .tools
TOOLS_INSTALLED := $(TOOLS)/.installed
CLUSTER ?= radpipe
IMAGE_REGISTRY ?=
IMAGE_TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' radpipe/__init__.py)
IMAGE_PREFIX := $(if $(IMAGE_REGISTRY),$(patsubst %/,%,$(IMAGE_REGISTRY))/,)
IMAGES := ingest prepare-base train evaluate-and-register serving mlflow
BASE_IMAGE ?=
LOCAL_BASE_IMAGE := radpipe-base:bookworm-py3.11
KFP_VERSION := 2.17.0
KSERVE_VERSION := v0.20.0
CERT_MANAGER_VERSION := v1.17.0
KFP_MANIFESTS := github.com/kubeflow/pipelines/manifests/kustomize
KSERVE_RELEASE := https://github.com/kserve/kserve/releases/download/$(KSERVE_VERSION)
KFP_PORT ?= 8080
MLFLOW_PORT ?= 5000
MODEL ?= chest-ct@champion
SUBMIT_ARGS ?=
# `kubectl port-forward` for the length of one command: $(call forwarding,NAMESPACE,SERVICE,LOCAL:REMOTE,URL,COMMAND)
forwarding = kubectl -n $(1) port-forward svc/$(2) $(3) >/dev/null & pf=$$!; trap 'kill $$pf' EXIT; \
	for i in $$(seq 60); do curl -s -o /dev/null $(4) && break; sleep 1; done; $(5)

$(TOOLS_INSTALLED): tools-requirements.txt
	@test -n "$(PYTHON)" || { echo "error: no python3 found; install Python 3.10-3.12"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q -r tools-requirements.txt
	@touch $@

tools: $(TOOLS_INSTALLED) ## static checkers (hadolint, kubernetes-validate, checkov) in .tools/

constraints: ## re-resolve pyproject.toml's dependencies into constraints.txt (then: make install image-locks)
	rm -rf .venv-resolve
	$(PYTHON) -m venv .venv-resolve
	.venv-resolve/bin/python -m pip install -q -e ".[test]"
	{ sed -n '1,3p' constraints.txt; .venv-resolve/bin/python -m pip freeze --exclude-editable | grep -v '^radpipe'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-resolve

image-locks: install ## re-lock images/*/requirements.lock to the packages installed in .venv
	$(BIN)/python images/lock.py

images: ## build every image: radpipe-<stage> x4, radpipe-serving, radpipe-mlflow (BASE_IMAGE=, IMAGE_REGISTRY=, IMAGE_TAG=)
	IMAGE_REGISTRY="$(IMAGE_REGISTRY)" IMAGE_TAG="$(IMAGE_TAG)" BASE_IMAGE="$(BASE_IMAGE)" images/build.sh $(IMAGES)

# Air-gapped hosts (no container registry): a Python base image from a Debian mirror, then
# `make images BASE_IMAGE=$(LOCAL_BASE_IMAGE)`. Needs root, debootstrap and a Docker daemon.
# Every image built and run for real (docs/cluster.md, "On a laptop without Kubernetes"). Starts dockerd
# where it can (root + apt-get) and stops it again; without a daemon the tests skip and say why.
test-containers: install seed-weights ## build the base and images, run the pipeline in them and the serving container
	BIN=$(BIN) PYTHON=$(PYTHON) BASE_IMAGE="$(BASE_IMAGE)" PYTEST_ARGS="$(PYTEST_ARGS)" images/test-containers.sh

base-image: ## make $(LOCAL_BASE_IMAGE) from a Debian mirror (DEBIAN_MIRROR=) for hosts that cannot pull
	images/base/build.sh $(LOCAL_BASE_IMAGE)

kind-load: ## load the built images into the kind cluster (CLUSTER=radpipe)
	@for image in $(IMAGES); do \
	  kind load docker-image --name $(CLUSTER) $(IMAGE_PREFIX)radpipe-$$image:$(IMAGE_TAG) || exit 1; \
	done

cluster-up: ## kind cluster with KFP 2.17.0, KServe v0.20.0 and radpipe's overlay (run make images first)
	@kind get clusters 2>/dev/null | grep -qx $(CLUSTER) || kind create cluster --name $(CLUSTER) --config manifests/kind-cluster.yaml
	kubectl apply -k "$(KFP_MANIFESTS)/cluster-scoped-resources?ref=$(KFP_VERSION)"
	kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
	kubectl apply -k "$(KFP_MANIFESTS)/env/platform-agnostic?ref=$(KFP_VERSION)"
	kubectl apply -f https://github.com/cert-manager/cert-manager/releases/download/$(CERT_MANAGER_VERSION)/cert-manager.yaml
	kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s
	kubectl apply --server-side -f $(KSERVE_RELEASE)/kserve-crds.yaml
	kubectl wait --for condition=established --timeout=120s crd/inferenceservices.serving.kserve.io crd/clusterstoragecontainers.serving.kserve.io
	kubectl apply --server-side -f $(KSERVE_RELEASE)/kserve.yaml
	kubectl -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout=300s
	kubectl apply --server-side -f $(KSERVE_RELEASE)/kserve-cluster-resources.yaml
	kubectl -n kserve patch configmap inferenceservice-config --type merge -p '{"data":{"deploy":"{\"defaultDeploymentMode\": \"Standard\"}"}}'
	$(MAKE) kind-load
	kubectl apply -k manifests/overlays/kind
	kubectl -n radpipe wait --for=condition=complete job/minio-buckets --timeout=300s
	kubectl -n radpipe rollout status deployment/mlflow --timeout=300s
	kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout=900s
	@echo "cluster $(CLUSTER) is up: make submit SUBMIT_ARGS='--data s3://radpipe/data/<set>', then make deploy"

cluster-down: ## delete the kind cluster (CLUSTER=radpipe)
	kind delete cluster --name $(CLUSTER)

submit: install ## run pipelines/radpipe-training.yaml on the cluster's KFP, wait, print the run URL
	@$(call forwarding,kubeflow,ml-pipeline-ui,$(KFP_PORT):80,http://localhost:$(KFP_PORT)/,\
	  $(BIN)/python -m radpipe.pipelines.submit --host http://localhost:$(KFP_PORT) $(SUBMIT_ARGS))

deploy: install ## serve MODEL (default chest-ct@champion) with KServe: render into manifests/overlays/kind/ and apply
	@$(call forwarding,radpipe,mlflow,$(MLFLOW_PORT):5000,http://localhost:$(MLFLOW_PORT)/health,\
	  MLFLOW_TRACKING_URI=http://localhost:$(MLFLOW_PORT) $(BIN)/radpipe deploy $(MODEL) \
	    -o manifests/overlays/kind/inferenceservice-$(subst /,-v,$(subst @,-,$(MODEL))).yaml && \
	  kubectl apply -f manifests/overlays/kind/inferenceservice-$(subst /,-v,$(subst @,-,$(MODEL))).yaml)

clean: ## remove local runs (.radpipe/) and caches; keeps .venv
	rm -rf .radpipe .pytest_cache .ruff_cache

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

.DEFAULT_GOAL := help
.PHONY: help install demo test test-deps lint format compile seed-weights clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: no python3 found; install Python 3.10-3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
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

# The serving page is tested in headless Chromium (Debian's package). Without root it is skipped, and so
# are those tests (they say why).
test-deps: ## install headless Chromium for the upload-page tests (Debian/Ubuntu, as root)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is not installed and this is not root with apt-get: the upload-page tests will skip"; fi; }

test: install test-deps ## lint, then run the test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: install ## recompile pipelines/radpipe-training.yaml
	$(BIN)/radpipe compile

clean: ## remove local runs (.radpipe/) and caches; keeps .venv
	rm -rf .radpipe .pytest_cache .ruff_cache

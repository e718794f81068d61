# Shortcuts for the common tasks; each is one command you can also run by hand.
# `make test` runs what CI runs after set-up (see .ci/run for the whole sequence on a fresh machine).

VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: help venv images e2e test demo lint

help:
	@echo "make venv    create $(VENV) with the package, its test tools and its linters"
	@echo "make images  start Docker if needed and build the images (tailer, ambassador, adapter, demo-app)"
	@echo "make e2e     run the example Pods in Docker (tests/e2e)"
	@echo "make test    run every test"
	@echo "make demo    start the demo app and the three sidecars on localhost (Ctrl-C stops)"
	@echo "make lint    ruff, mypy and hadolint"

venv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test,dev]' -e examples/portwatch

images:
	bash .ci/docker.sh

e2e: images
	$(PY) -m pytest tests/e2e -q

test:
	$(PY) -m pytest -q

demo:
	$(VENV)/bin/sidecars demo

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy sidecars
	$(VENV)/bin/hadolint images/Dockerfile

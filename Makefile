# Two entry points: `make serve` (set up, then serve sample-data with the shipped models) and
# `make test` (set up, then lint and test). Both create .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STUDIES ?= sample-data
HOST ?= 127.0.0.1
PORT ?= 8000
CONF ?=
PYTEST_ARGS ?=

.PHONY: venv serve test lint sample-data clean

$(VENV)/.installed: requirements/constraints.txt requirements/runtime.txt requirements/dev.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	# monailabel without its declared dependencies: its sam2 requirement drags torchvision and a CUDA torch
	$(PY) -m pip install -q --no-deps monailabel==0.8.5
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/runtime.txt -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

serve: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" monailabel start_server --app lesion_app --studies $(STUDIES) \
		--host $(HOST) --port $(PORT) $(CONF)

test: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

sample-data: venv
	rm -rf sample-data
	$(PY) -m apps.make_sample_data sample-data --count 10 --labelled 4

clean:
	rm -rf $(VENV)

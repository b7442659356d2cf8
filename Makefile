# Two entry points: `make serve` (set up, then serve a working copy of sample-data with the shipped models) and
# `make test` (set up, then lint and test). Both create .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# What the server writes (uploaded photographs, saved labels, trained models) goes to WORKSPACE, git-ignored,
# never into the repository. `make serve` sets up the viewers, starts a private Orthanc with its storage in
# WORKSPACE/orthanc, fills it with sample-data on first use (photographs, labels as SEGs) and serves it: the worklist
# at http://HOST:PORT/worklist opens OHIF's lesion mode; stopping it stops Orthanc. `make serve STUDIES=<folder or
# DICOMweb URL>` serves that instead (STUDIES=$(WORKSPACE)/sample-data: a copy of sample-data made there).
WORKSPACE ?= workspace
STUDIES ?=
MODEL_DIR ?= $(WORKSPACE)/models
HOST ?= 127.0.0.1
PORT ?= 8000
CONF ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each taking whole test files, so a file's module fixtures (a server, an Orthanc,
# a browser) start once and its tests run in order; 1 runs them in this process.
TEST_WORKERS ?= 2
# The long-running programs replace the recipe's shell (exec), so the SIGTERM make forwards reaches them, and they
# stop when make ends (make forwards no SIGHUP, and a killed make nothing): see "Stopping" in docs/operating.md.
RUN_UNDER_MAKE = LESION_STOP_WITH_PARENT=$$PPID exec

.PHONY: venv serve test lint sample-data clean viewers orthanc

# The pinned packages are installed by uv rather than pip: the same versions in 75 s instead of 204 s here (torch
# dominates). --compile-bytecode as pip does: without .pyc files every process (the server, each test worker)
# compiles torch and MONAI again where PYTHONDONTWRITEBYTECODE is set. uv reads pip's PIP_FIND_LINKS (where this
# machine keeps the CPU torch wheel).
UV_VERSION := 0.13.10
UV_INSTALL = UV_FIND_LINKS="$${UV_FIND_LINKS:-$$(echo $$PIP_FIND_LINKS | tr ' ' ,)}" \
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY)

$(VENV)/.installed: requirements/constraints.txt requirements/runtime.txt requirements/dev.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	# monailabel without its declared dependencies: its sam2 requirement drags torchvision and a CUDA torch
	$(UV_INSTALL) --no-deps monailabel==0.8.5
	$(UV_INSTALL) -c requirements/constraints.txt -r requirements/runtime.txt -r requirements/dev.txt
	$(UV_INSTALL) --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

serve: venv
ifeq ($(STUDIES),)
	@command -v Orthanc >/dev/null && [ -f viewer/node_modules/@ohif/app/dist/index.html ] || $(MAKE) viewers
	MONAI_LABEL_DICOMWEB_CACHE_PATH="$(abspath $(WORKSPACE))/dicom-cache" $(RUN_UNDER_MAKE) $(VENV)/bin/lesion-orthanc \
		--storage "$(WORKSPACE)/orthanc" --port "$(ORTHANC_PORT)" --fill sample-data -- \
		$(VENV)/bin/lesion-serve --studies {dicomweb} --host "$(HOST)" --port "$(PORT)" \
		--conf model_dir "$(abspath $(MODEL_DIR))" $(CONF)
else
	@if [ "$(STUDIES)" = "$(WORKSPACE)/sample-data" ] && [ ! -d "$(STUDIES)" ]; then \
		mkdir -p "$(WORKSPACE)" && cp -r sample-data "$(STUDIES)" && echo "serving a copy of sample-data: $(STUDIES)"; fi
	$(RUN_UNDER_MAKE) $(VENV)/bin/lesion-serve --studies "$(STUDIES)" --host "$(HOST)" --port "$(PORT)" \
		--conf model_dir "$(abspath $(MODEL_DIR))" $(CONF)
endif

# The lesion mode's JavaScript (served inside OHIF's app-config.js) is linted and format-checked by Biome, pinned in
# viewer/package.json: skipped where `make viewers` has not installed it (as the viewer tests skip), required in CI.
BIOME := viewer/node_modules/.bin/biome
JS := lesion_app/server/viewer/lesion_mode
define lint_js
	@if [ -x $(BIOME) ]; then $(BIOME) $(1) --config-path viewer $(JS); \
	elif [ "$$LESION_REQUIRE_VIEWERS" = 1 ]; then echo "Biome is missing: run make viewers" >&2; exit 1; \
	else echo "not linting $(JS): Biome is missing (make viewers installs it)"; fi
endef

test: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(call lint_js,check)
	$(PY) -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Debian packages for the OHIF/Orthanc round trip (tests skip them where missing; CI installs them), Node's npm
# where it is missing, then OHIF 3.13.2 as pinned by viewer/package-lock.json into viewer/node_modules (git-ignored;
# the server serves its prebuilt dist/ at /ohif/, nothing is fetched at run time).
VIEWER_PACKAGES := orthanc orthanc-dicomweb chromium dicom3tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
viewers:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(VIEWER_PACKAGES) \
		$$(command -v npm >/dev/null || echo nodejs npm)
	npm ci --prefix viewer --ignore-scripts --no-audit --no-fund

# A private Orthanc with DICOMweb on 127.0.0.1:ORTHANC_PORT (storage in ORTHANC_STORAGE); serve it with
# `make serve STUDIES=http://127.0.0.1:8042/dicom-web` after `lesion-dicom-import sample-data --stow ...`.
ORTHANC_STORAGE ?= $(HOME)/.cache/lesion-orthanc
ORTHANC_PORT ?= 8042
orthanc: venv
	$(RUN_UNDER_MAKE) $(VENV)/bin/lesion-orthanc --storage "$(ORTHANC_STORAGE)" --port "$(ORTHANC_PORT)"

lint: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
	$(call lint_js,check --write)

sample-data: venv
	rm -rf sample-data
	$(PY) -m apps.make_sample_data sample-data --count 10 --labelled 4

clean:
	rm -rf $(VENV)

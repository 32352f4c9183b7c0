# One command to set up and run the main job, one to set up and run the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NB ?= notebooks/01_resnet18_baseline.ipynb
SHARED_DATA ?= ../shared/data/cifar10_local.py
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup data run run-all test test-fast lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# CIFAR-10 into data/: the offline JPEG-75 copy when ../shared has it, else torchvision's download.
data: setup
	@if [ -d data/cifar-10-batches-py ]; then echo "data/cifar-10-batches-py already there"; \
	elif [ -f $(SHARED_DATA) ]; then $(PY) $(SHARED_DATA) data/; \
	else $(PY) -c "import sys, helpers; sys.tracebacklimit = 0; helpers.load_cifar10('data')"; fi

# The main job. On a CUDA GPU: notebook 01 (or NB=...) in full, executed in place, so its outputs and run record are
# saved. Without one: the device found, the full run's estimated time there, and a quick reduced run into
# runs/quick/ instead (a few minutes); FORCE=1 runs the full one anyway.
run: data
	$(PY) -m helpers.launch $(NB) $(if $(FORCE),--force)

run-all: data
	$(PY) -m helpers.launch notebooks/0*.ipynb $(if $(FORCE),--force)

# Unit tests of every helper, then every notebook end to end in smoke mode (synthetic data, CPU), as on a fresh
# machine; the real-data test runs when data/ (or $$CIFAR10_ROOT) holds CIFAR-10, and skips otherwise.
test: setup
	SMOKE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider --durations=15

test-fast: setup
	$(PY) -m pytest tests -p no:cacheprovider -x -q

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .pytest_cache checkpoints runs

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
	else $(PY) -c "import helpers; helpers.load_cifar10('data')"; fi

# The main job: execute notebook 01 (or NB=...) in full, in place, so its outputs and run record are saved.
run: data
	$(PY) -m papermill --cwd notebooks $(NB) $(NB)

run-all: data
	for nb in notebooks/0*.ipynb; do $(PY) -m papermill --cwd notebooks $$nb $$nb || exit 1; done

# Unit tests of every helper, then every notebook end to end in smoke mode (tiny subset, CPU).
test: setup
	SMOKE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider --durations=15

test-fast: setup
	$(PY) -m pytest tests -p no:cacheprovider -x -q

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .pytest_cache checkpoints

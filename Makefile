# One command to set up and run the main job, one to set up and run the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Colab's image (requirements-colab-image.txt) runs Python 3.13: pyenv's, else one on the PATH, else uv's
# (`uv python install 3.13` provides one on any machine).
COLAB_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) $(shell command -v python3.13) \
                            $(shell uv python find 3.13 2>/dev/null))
NO_COLAB_PYTHON := no Python 3.13 found for the Colab twin (.venv-colab): uv python install 3.13 (or pyenv install \
                   3.13) provides one, or set COLAB_PYTHON=/path/to/python3.13
# The tests' selection (tests and notebooks: all of them).
TESTS ?= tests notebooks
COLAB_VENV ?= .venv-colab
NB ?= notebooks/01_resnet18_baseline.ipynb
SHARED_DATA ?= ../shared/data/cifar10_local.py
export NO_ALBUMENTATIONS_UPDATE := 1
# The Colab image's ipykernel 6.17 imports debugpy at once, which warns about frozen modules on every kernel start.
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Both venvs install without bytecode (--no-compile: half the install time); the first import writes it instead, so
# a machine that sets PYTHONDONTWRITEBYTECODE would recompile torch in every test process.
unexport PYTHONDONTWRITEBYTECODE
# Kernels draw figures inline only when MPLBACKEND is unset (ipykernel's default): under Agg, say, a notebook stored
# with its figures would not match a new run of it.
unexport MPLBACKEND

.PHONY: setup setup-colab data run run-all verify gpu-bundle test test-main test-colab test-fast lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# A second environment equal to Google Colab's GPU image (Python 3.13, torch 2.11, numpy 2.1, ...), where most users
# run the notebooks: code that passes here on our newer pins can break there.
setup-colab: $(COLAB_VENV)/.installed

$(COLAB_VENV)/.installed: requirements-colab-image.txt requirements-colab.txt pyproject.toml
	@test -n "$(COLAB_PYTHON)" || { echo "$(NO_COLAB_PYTHON)" >&2; exit 1; }
	$(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install -q --no-compile -r requirements-colab-image.txt
	$(COLAB_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# CIFAR-10 into data/: the offline JPEG-75 copy when ../shared has it, else torchvision's download.
data: setup
	@if [ -d data/cifar-10-batches-py ]; then echo "data/cifar-10-batches-py already there"; \
	elif [ -f $(SHARED_DATA) ]; then $(PY) $(SHARED_DATA) data/; \
	else $(PY) -c "import sys, helpers; sys.tracebacklimit = 0; helpers.load_cifar10('data')"; fi

# The main job. On a CUDA GPU: notebook 01 (or NB=...) in full, its executed copy saved over the notebook when it
# finishes, with its run record. Without one: the device found, the full run's estimated time there, and a quick
# reduced run into runs/quick/ instead (a few minutes) where that is over 3 h; FORCE=1 runs the full one anyway,
# HOURS=2.5 runs it in sittings of at most that long (each resumes the last one's checkpoint).
run: data
	$(PY) -m helpers.launch $(NB) $(if $(FORCE),--force) $(if $(HOURS),--hours $(HOURS))

run-all: data
	$(PY) -m helpers.launch notebooks/0*.ipynb $(if $(FORCE),--force) $(if $(HOURS),--hours $(HOURS))

# Every released model (weights/*.safetensors) checked against its run record and re-measured on the CIFAR-10 test
# set, raw and with flip TTA, on this machine's device: a table of measured vs recorded accuracy (NAMES=... for
# some notebooks, QUICK=1 for the first 1,000 test images only). Exits non-zero when a figure differs.
verify: data
	$(PY) -m helpers.verify $(NAMES) $(if $(QUICK),--quick)

# The GPU machine's bundle (../shared/gpu/README.md) plus the safetensors wheel, which its wheel list lacks and a
# full run needs to release its weights (without it the run record is kept and the release is skipped), less the
# debugpy and jedi wheels (10 MB: ipykernel and IPython run without them, a papermill run checked here), so that a
# call's copy, within the run tool's 64 MiB, holds a ResNet18's released file (tools/gpu-weights.sh).
GPU_BUNDLE_SCRIPT ?= ../shared/gpu/bundle.sh
gpu-bundle:
	@test -f $(GPU_BUNDLE_SCRIPT) || { echo "make gpu-bundle is for this project's offline GPU runner: it needs \
	$(GPU_BUNDLE_SCRIPT) beside the clone (GPU_BUNDLE_SCRIPT=... names another); a clone with network access \
	needs no bundle (make setup installs everything)" >&2; exit 2; }
	bash $(GPU_BUNDLE_SCRIPT)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 -d .gpu-bundle/whl $$(grep -m1 '^safetensors==' requirements.txt)
	rm -f .gpu-bundle/whl/debugpy-*.whl .gpu-bundle/whl/jedi-*.whl

# The tests, in both environments: ours (.venv, requirements.txt) and Colab's (.venv-colab). Without a Python 3.13
# the Colab twin is skipped with a one-line notice and `make test` passes on the main suite alone; where CI is set
# (.ci/run sets it) a missing 3.13 is an error, before any test runs.
test:
	@if [ -z "$(COLAB_PYTHON)" ] && [ -n "$$CI" ]; then echo "CI runs the Colab twin: $(NO_COLAB_PYTHON)" >&2; exit 1; fi
	@if [ -n "$(COLAB_PYTHON)" ]; then \
	  echo "The main suite and the Colab twin run side by side; each one's output shows when it ends."; \
	  $(MAKE) --no-print-directory -j2 --output-sync=target test-main test-colab; \
	else $(MAKE) --no-print-directory test-main && \
	  echo "Colab twin skipped: $(NO_COLAB_PYTHON). The main suite above ran and passed."; fi

# Unit tests of every helper, then every notebook end to end in smoke mode (synthetic data, CPU), as on a fresh
# machine; the real-data test runs when data/ (or $$CIFAR10_ROOT) holds CIFAR-10, and skips otherwise. nbval in
# strict mode: a notebook stored with outputs must give the same ones in every cell not tagged nbval-ignore-output.
# In test-main, nbval takes only the notebooks stored with a run's outputs (whose untagged cells a new smoke run must
# give again): tests/test_executed_notebooks.py executes every notebook, strict nbval included, so the notebooks
# stored without outputs would otherwise run once more for nothing.
# Both suites run in pytest-xdist workers, one per core, each torch on one thread (OMP_NUM_THREADS=1: OpenMP threads
# of two workers on the same cores spin-wait on each other); one notebook's nbval cells, and one executed notebook's
# tests, stay in one worker (`--dist loadgroup` and the conftest files' xdist_group marks). `make test` runs the two
# suites side by side: their four single-threaded workers keep both cores busy to the end, where one suite alone
# leaves a core idle behind its longest test.
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval-sanitize.cfg
XDIST := -n auto --dist loadgroup
STORED_RUNS = $(shell grep -l '"output_type"' notebooks/0*.ipynb)
test-main: setup
	SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest $(patsubst notebooks,$(STORED_RUNS),$(TESTS)) $(NBVAL) $(XDIST) \
		-p no:cacheprovider --durations=15

# The same unit tests and notebook smoke runs in the Colab-equivalent environment (the real-data test and the
# committed releases' check on the real data, which measure learning and the weights rather than the environment,
# and the second execution of every notebook through `make run`'s path, with the two-run reproducibility test, run
# in test-main only; so do the Makefile's own tests, whose `make test` runs .venv's pytest from either).
test-colab: setup-colab
	SMOKE=1 OMP_NUM_THREADS=1 $(COLAB_VENV)/bin/python -m pytest $(TESTS) $(NBVAL) $(XDIST) -p no:cacheprovider \
		--ignore=tests/test_real_data.py --ignore=tests/test_executed_notebooks.py --ignore=tests/test_makefile.py \
		-k "not committed_release_reproduces" --durations=5

test-fast: setup
	$(PY) -m pytest tests -p no:cacheprovider -x -q

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) $(COLAB_VENV) .pytest_cache checkpoints runs

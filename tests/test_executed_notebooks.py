"""Every notebook as a reader will see it: a notebook stored with a full run's outputs as it is stored, the others
executed the way `make run` executes them (`helpers.notebook.execute`).

Those run in smoke mode (synthetic data, CPU) with MPLBACKEND=Agg in the environment, as on a headless server,
and with SEED and EPOCHS unlike the smoke run's, the way a full run's stored outputs differ from a new smoke run's.
Notebooks 01 and 03 run as on the GPU machine, where ipywidgets is missing and tqdm draws text bars; the others
get widget bars, as in JupyterLab or Colab. Then:
- every cell that draws a figure holds it as a PNG (counted per notebook), of a size GitHub shows well;
- no output holds a progress bar's redraws (carriage returns, escape codes), a widget, or a warning;
- the training cell says a few lines per epoch (at most two, and a few more);
- `pytest --nbval` in strict mode, the design card's command, passes on these executed copies: each cell whose
  output depends on the data, device or run is tagged `nbval-ignore-output`, and the rest (model summaries,
  receptive fields, parameter groups, the presence of each figure) must come out the same. A notebook stored with a
  full run's outputs is left to `make test`'s nbval, which compares a new smoke run with those outputs themselves.
- a second run of notebook 03 with the same seed gives the same LR suggestion, history and plots.
Each notebook is executed at most once, in its own folder; under pytest-xdist (`make test`) all of one notebook's
tests run in one worker (the `xdist_group` mark), the notebooks side by side.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

import helpers as h
from helpers.notebook import clean_outputs, execute

NOTEBOOK_DIR = h.PROJECT_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("0*.ipynb"))
SANITIZE = NOTEBOOK_DIR / "nbval-sanitize.cfg"
EPOCHS = 3  # the smoke runs train 2
FIGURES = {  # images each notebook's run saves: one per plotting cell, two Grad-CAM grids in 03
    "01_resnet18_baseline": 6, "02_light_dilated_net": 6, "03_resnet18_lrfinder_gradcam": 8,
    "04_resnet9_onecycle": 6, "05_kaggle_resnet": 5}
TEXT_BARS = {"01_resnet18_baseline", "03_resnet18_lrfinder_gradcam"}  # executed without ipywidgets
PLOTTING = re.compile(r"\b(plot_\w+|find_lr)\(")
MAX_WIDTH = 1600  # pixels: matplotlib's 100 dpi; GitHub scales a notebook's images down to its column
MAX_IMAGE_BYTES = 200_000  # the largest, a grid of 25 images, is ~140 kB here (synthetic noise) and ~110 kB on CIFAR-10


STORED_RUNS = {p.stem for p in NOTEBOOKS if '"output_type"' in p.read_text()}  # as the Makefile's STORED_RUNS


@dataclass
class Executed:
    name: str
    notebook: nbformat.NotebookNode
    folder: Path  # the executed copy beside a copy of notebooks/conftest.py, and its run record
    epochs: int  # that the notebook trained


def execute_smoke(name: str, folder: Path, tmp_path_factory) -> nbformat.NotebookNode:
    """The notebook executed in smoke mode through `execute` into `folder`, its run record there too, saved without
    papermill's injected-parameters cell (as a full run, which overrides nothing, is saved)."""
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    shutil.copy(NOTEBOOK_DIR / "conftest.py", folder)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SMOKE", "1")
        environment.setenv("MPLBACKEND", "Agg")
        if name in TEXT_BARS:
            no_widgets = tmp_path_factory.mktemp("no-ipywidgets")
            (no_widgets / "ipywidgets.py").write_text("raise ImportError('ipywidgets is not installed here')\n")
            environment.setenv("PYTHONPATH", str(no_widgets), prepend=os.pathsep)
        execute(path, folder / path.name, parameters={"SEED": 1, "EPOCHS": EPOCHS, "RESULTS_DIR": str(folder)},
                cwd=str(NOTEBOOK_DIR), progress_bar=False)
    notebook = nbformat.read(folder / path.name, as_version=4)
    notebook.cells = [c for c in notebook.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nbformat.write(notebook, folder / path.name)
    return notebook


@pytest.fixture(scope="session")
def executions() -> dict[str, Executed]:
    return {}


@pytest.fixture(params=list(FIGURES))
def executed(request, executions, tmp_path_factory) -> Executed:
    """The notebook as stored when it holds a full run's outputs, else executed; either once per session (under
    pytest-xdist, in the worker that runs its group)."""
    name = request.param
    if name in executions:
        return executions[name]
    if name in STORED_RUNS:
        notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        parameters = next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        epochs = int(re.search(r"^EPOCHS = .* else (\d+)", parameters, re.MULTILINE).group(1))  # the full run's
        executions[name] = Executed(name, notebook, NOTEBOOK_DIR, epochs)
    else:
        folder = tmp_path_factory.mktemp(f"executed-{name}")
        executions[name] = Executed(name, execute_smoke(name, folder, tmp_path_factory), folder, EPOCHS)
    return executions[name]


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


def png_size(encoded: str) -> tuple[int, int, int]:
    """Width, height and bytes of a base64 PNG."""
    data = base64.b64decode(encoded)
    width, height = struct.unpack(">II", data[16:24])
    return width, height, len(data)


def test_every_figure_is_saved_as_a_png_of_a_readable_size(executed):
    notebook = executed.notebook
    images = {i: [o.data["image/png"] for o in c.outputs if "image/png" in o.get("data", {})]
              for i, c in enumerate(code_cells(notebook))}
    plotting = [i for i, c in enumerate(code_cells(notebook)) if PLOTTING.search(c.source)]
    assert plotting and all(images[i] for i in plotting), f"plotting cells without a figure: " \
        f"{[i for i in plotting if not images[i]]}"
    assert sum(map(len, images.values())) == FIGURES[executed.name]
    for image in (image for cell in images.values() for image in cell):
        width, height, size = png_size(image)
        assert width <= MAX_WIDTH and size <= MAX_IMAGE_BYTES, (width, height, size)


def test_outputs_hold_no_bar_redraws_widgets_or_warnings(executed):
    notebook = executed.notebook
    for cell in code_cells(notebook):
        for output in cell.outputs:
            assert output.output_type != "error", output
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            assert "\r" not in text and "\x1b[" not in text, text
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {})
            assert not re.search(r"\w+Warning: ", text), text
    assert clean_outputs(nbformat.from_dict(notebook)) == notebook, "cleaning it again changes nothing"


def test_the_training_cell_says_a_few_lines_per_epoch(executed):
    [training] = [c for c in code_cells(executed.notebook) if "h.fit(" in c.source]
    lines = "".join(o.text for o in training.outputs if o.output_type == "stream").splitlines()
    assert any(line.startswith("training: ") for line in lines), "the epochs' bar, in its final state"
    assert not any(re.match(r"epoch \d+/\d+:", line) for line in lines), "each epoch's own bar closed itself"
    assert len(lines) <= 2 * executed.epochs + 5, lines


def test_pytest_nbval_strict_passes_on_the_executed_notebook(executed):
    """The design card's `pytest --nbval` compares every untagged cell's output with the stored one; a new smoke
    run (other seed, other epochs, and no MPLBACKEND) must agree with this executed copy."""
    if executed.name in STORED_RUNS:
        pytest.skip("stored with a full run's outputs: make test's nbval compares a new smoke run with those")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND" and not k.startswith("PYTEST_XDIST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", f"--nbval-sanitize-with={SANITIZE}",
         "-p", "no:cacheprovider", "-q", "--rootdir", str(executed.folder), str(executed.folder)],
        env={**env, "SMOKE": "1"}, capture_output=True, text=True, cwd=executed.folder)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(rf"\b{len(code_cells(executed.notebook))} passed\b", done.stdout), done.stdout[-2000:]


def images_of(notebook: nbformat.NotebookNode) -> list[str]:
    return [o.data["image/png"] for c in code_cells(notebook) for o in c.outputs if "image/png" in o.get("data", {})]


def test_a_second_run_with_the_same_seed_is_the_same(tmp_path_factory):
    """Every random stream before and outside `fit` (the augmentation preview's and the range test's albumentations
    draws, shuffling, initialization) is seeded from SEED: notebook 03's smoke run, run twice, gives the same LR
    suggestion, the same history and the same plots (two smoke runs: the stored notebook holds the full run's)."""
    name = "03_resnet18_lrfinder_gradcam"
    folders = [tmp_path_factory.mktemp(label) for label in ("once", "again")]
    runs = [execute_smoke(name, folder, tmp_path_factory) for folder in folders]
    first, second = (json.loads(next(f.glob(f"{name}*.json")).read_text()) for f in folders)
    assert first["suggested_lr"] == second["suggested_lr"]
    drop_time = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in first["history"]]
    assert drop_time == [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in second["history"]]
    assert len(images_of(runs[0])) >= 6 and images_of(runs[0]) == images_of(runs[1])


def test_a_stored_runs_papermill_overrides_are_shown_but_not_rerun(tmp_path):
    """A notebook executed with `-p EPOCHS 20` holds papermill's injected cell; the smoke run must not take it.
    Here the untagged cell that prints EPOCHS then fails (stored 20, now 2), which shows the override was skipped."""
    shutil.copy(NOTEBOOK_DIR / "conftest.py", tmp_path)
    cells = [nbformat.v4.new_code_cell("EPOCHS = 2", metadata={"tags": ["parameters"]}, execution_count=1),
             nbformat.v4.new_code_cell("EPOCHS = 20", metadata={"tags": ["injected-parameters"]}, execution_count=2),
             nbformat.v4.new_code_cell("print(EPOCHS)", execution_count=3,
                                       outputs=[nbformat.v4.new_output("stream", text="20\n")])]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "stored.ipynb")
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
                           "-q", "-rs", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and "1 failed, 1 passed, 1 skipped" in done.stdout, done.stdout[-3000:]
    assert "papermill's overrides of a stored run" in done.stdout

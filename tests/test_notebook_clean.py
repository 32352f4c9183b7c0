"""`helpers.notebook`: executed notebooks as a reader sees them (progress bars, library noise, figures).

The fixture `messy_outputs.ipynb` holds the raw outputs of two papermill runs of notebook 04's smoke run (one in an
environment without ipywidgets: text bars; one with them: widget bars and their saved state), plus hand-made
colours, warnings and split messages.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import nbformat
import pytest

from helpers import notebook
from helpers.notebook import clean, render_terminal

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "messy_outputs.ipynb")
TRAINING_BAR = ("training: 100%|██████████| 2/2 [00:01<00:00,  1.94epoch/s, train_loss=1.8913, test_acc=0.2000, "
                "test_acc_ema=0.2667]\n")


@pytest.fixture
def messy(tmp_path):
    path = tmp_path / "messy.ipynb"
    shutil.copy(FIXTURE, path)
    return path


def streams(cell) -> list[tuple[str, str]]:
    return [(o.name, o.text) for o in cell.outputs if o.output_type == "stream"]


def test_a_messy_notebook_comes_out_as_a_reader_should_see_it(messy):
    assert clean(messy) is True
    cells = nbformat.read(messy, as_version=4).cells
    assert cells[1].outputs == [], "tqdm's warning about ipywidgets is library noise"

    [(name, range_test)] = streams(cells[2])
    assert name == "stdout", "a bar's final state is no error: not in stderr's red box"
    assert range_test.startswith("100%|██████████| 18/18 [00:00<00:00, 24.46it/s]\nLR range test, 18 of 18 steps")
    assert [o.output_type for o in cells[2].outputs] == ["stream", "display_data"], "the figure stays"
    assert streams(cells[3]) == [("stdout", TRAINING_BAR + (
        "Final model (weights of epoch 2 of 2) on 30 test images: raw weights 20.00% (flip TTA 20.00%) · EMA weights "
        "26.67% (flip TTA 23.33%) (0.4 s)\n2 epochs in 0.0 min on cpu (2 threads)\n"))], \
        "the epochs' own bars closed themselves (leave=False): gone"

    [(name, range_test)] = streams(cells[4])
    assert name == "stdout" and range_test.startswith("100%|██████████| 18/18 [00:00<00:00, ")
    assert "it/s]\nLR range test, 18 of 18 steps" in range_test
    [(name, training)] = streams(cells[5])
    first, *rest = training.splitlines()
    assert first.startswith("training: 100%|██████████| 2/2 [") and "&lt;" not in first
    assert first.endswith("train_loss=1.8913, test_acc=0.2000, test_acc_ema=0.2667]")
    assert rest[0].startswith("Final model (weights of epoch 2 of 2)") and not any("epoch 1/2" in r for r in rest)

    assert streams(cells[6]) == [
        ("stdout", "first line\nsecond line, bold and green\n"),
        ("stderr", "copying:  40%|████      | 4/10 [00:01<00:01]\n/work/helpers/engine.py:77: UserWarning: the "
                   "checkpoint was written on another device\n  warnings.warn(\n"),
        ("stdout", "third line\n")], "our own warning stays (and the bar beside it in stderr); torch-lr-finder's " \
                                     "closing remark goes"
    assert cells[7].outputs == [], "a progress bar whose widget state was not saved would show 0 %: dropped"
    assert cells[8].outputs[0].output_type == "error" and "\x1b[0;31m" in cells[8].outputs[0].traceback[0]
    assert "widgets" not in nbformat.read(messy, as_version=4).metadata, "no widget left to draw"


def test_cleaning_twice_changes_nothing(messy):
    clean(messy)
    once = messy.read_bytes()
    assert clean(messy) is False and messy.read_bytes() == once


def test_a_clean_notebook_is_left_byte_for_byte(tmp_path):
    path = tmp_path / "plain.ipynb"
    cell = nbformat.v4.new_code_cell("print('hi')", outputs=[nbformat.v4.new_output("stream", text="hi\n")])
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    before = path.read_bytes()
    assert clean(path) is False and path.read_bytes() == before


@pytest.mark.parametrize("raw, shown", [
    ("plain text\n  indented\n", "plain text\n  indented\n"),  # no control characters: unchanged
    ("\r 10%|#\r 50%|#####\r100%|##########\n", "100%|##########\n"),
    ("abc\x08\x08X\n", "aXc\n"),
    ("outer 0%\n\rinner 50%\x1b[A\n\r          \x1b[A\router 100%\n", "outer 100%\n"),
    ("\x1b[31mred\x1b[0m and \x1b[1mbold\x1b[0m\n", "red and bold\n"),
    ("long line\rshort\x1b[K\n", "short\n"),
    ("\r    \r", ""),
])
def test_render_terminal(raw, shown):
    assert render_terminal(raw) == shown
    assert render_terminal(shown) == shown


def test_the_command_line_cleans_files_and_names_them(messy, tmp_path, capsys):
    other = tmp_path / "other.ipynb"
    shutil.copy(messy, other)
    assert notebook.main(["clean", str(messy), str(other)]) == 0
    assert notebook.main(["clean", str(messy)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{messy}: cleaned", f"{other}: cleaned",
                                                    f"{messy}: already clean"]


def test_python_m_helpers_notebook_clean_runs_quietly(messy):
    """The GPU runner calls exactly this; runpy must not warn that the module was imported twice."""
    done = subprocess.run([sys.executable, "-m", "helpers.notebook", "clean", str(messy)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout == f"{messy}: cleaned\n" and done.stderr == ""


def test_execute_saves_figures_under_agg_and_cleans_bars(tmp_path, monkeypatch):
    """MPLBACKEND=Agg (headless servers, CI images) would leave the kernel showing no figure at all."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)  # where jupyter_client's default would put the kernel's IPC sockets
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);"),
        nbformat.v4.new_code_cell("from tqdm.std import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass"),
    ])
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.execute(source, tmp_path / "out.ipynb", progress_bar=False)
    figure, bar = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert "image/png" in figure.outputs[0].data
    assert re.match(r"steps: 100%\|█+\| 3/3 \[", bar.outputs[0].text) and "\r" not in bar.outputs[0].text
    assert os.environ["MPLBACKEND"] == "Agg", "the caller's environment is restored"
    assert os.listdir(tmp_path) == ["out.ipynb"], "no socket file in the working directory"


@pytest.mark.skipif(os.name == "nt", reason="IPC sockets: not on Windows")
def test_each_kernel_gets_ipc_sockets_of_its_own_outside_the_working_directory():
    """jupyter_client's default names ("kernel-ipc-N" in the working directory, N the first free number) let two
    kernels started at once from one folder share sockets: each client then read the other kernel's messages."""
    from jupyter_client.manager import KernelManager  # nbval's, in the tests (notebooks/conftest.py)

    managers = [notebook.local_kernel_manager(base)() for base in (None, None, KernelManager, KernelManager)]
    assert {m.transport for m in managers} == {"ipc"}
    assert len({m.ip for m in managers}) == 4
    assert all(os.path.isabs(m.ip) and os.path.dirname(m.ip) == tempfile.gettempdir() for m in managers)

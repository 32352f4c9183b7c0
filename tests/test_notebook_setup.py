"""The notebooks' first cell: the same setup in all five; it finds `helpers` without `pip install -e .` when the
notebook sits in the project; on Colab (faked here) it clones REPO_URL and installs requirements-colab.txt, and
stops with one clear line when either fails. Also where checkpoints and run records go (`h.storage_dir`)."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import helpers as h

NOTEBOOKS = sorted((h.PROJECT_ROOT / "notebooks").glob("0*.ipynb"))
BOOTSTRAP_END = "    import helpers as h\n"  # the shared setup's last line; each notebook's own imports follow


def first_cell(notebook) -> str:
    return "".join(json.loads(notebook.read_text())["cells"][1]["source"])


def setup_part(notebook) -> str:
    cell = first_cell(notebook)
    return cell[: cell.rindex(BOOTSTRAP_END) + len(BOOTSTRAP_END)]


# Runs in a fresh interpreter with the editable install hidden: executes cells (IPython syntax turned into Python)
# given as {label: [cwd, source]} and reports, per label, where `helpers` came from or the error that stopped it.
SCRIPT = textwrap.dedent("""
    import json, os, sys, types
    from IPython.core.inputtransformer2 import TransformerManager

    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    clean_path = list(sys.path)
    try:
        import helpers
        hidden = False
    except ModuleNotFoundError:
        hidden = True
    if os.environ.get("FAKE_COLAB"):
        sys.modules["google.colab"] = types.ModuleType("google.colab")
    report = {"hidden": hidden}
    for label, (cwd, source) in json.loads(sys.argv[1]).items():
        for name in [m for m in sys.modules if m == "helpers" or m.startswith("helpers.")]:
            del sys.modules[name]
        sys.path[:] = clean_path
        os.chdir(cwd)
        namespace = {}
        try:
            exec(TransformerManager().transform_cell(source), namespace)
            report[label] = {"helpers": namespace["h"].__file__}
        except Exception as err:
            rendered = err._render_traceback_() if hasattr(err, "_render_traceback_") else None
            report[label] = {"error": type(err).__name__, "name": getattr(err, "name", None),
                             "message": str(err), "rendered": rendered}
    print(json.dumps(report))
""")


def run_cells(cells: dict, colab: bool = False, repo_url: str | None = None) -> dict:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("FAKE_COLAB", None)
    if colab:
        env["FAKE_COLAB"] = "1"
    if repo_url:
        env["CIFAR10_NOTEBOOKS_REPO"] = repo_url
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cells)], capture_output=True, text=True,
                            timeout=600, env=env, cwd=h.PROJECT_ROOT / "notebooks")  # no `helpers` in it
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("hidden"), "the editable install was not hidden: this test would prove nothing"
    return report


def test_every_notebook_has_the_same_setup_and_its_badge_points_at_its_repository():
    setups = {setup_part(nb) for nb in NOTEBOOKS}
    assert len(setups) == 1
    [url] = re.findall(r'^REPO_URL = os.environ.get\("CIFAR10_NOTEBOOKS_REPO", "([^"]+)"\)$', setups.pop(), re.M)
    for nb in NOTEBOOKS:
        title = "".join(json.loads(nb.read_text())["cells"][0]["source"])
        badge = url.replace("https://github.com/", "https://colab.research.google.com/github/")
        assert f"({badge}/blob/main/notebooks/{nb.name})" in title


def test_first_cell_puts_the_project_on_the_path_when_helpers_is_not_installed(tmp_path):
    cells = {nb.name: [str(h.PROJECT_ROOT / "notebooks"), first_cell(nb)] for nb in NOTEBOOKS}
    cells["outside"] = [str(tmp_path), first_cell(NOTEBOOKS[0])]
    report = run_cells(cells)
    outside = report.pop("outside")
    assert report == {nb.name: {"helpers": str(h.PROJECT_ROOT / "helpers" / "__init__.py")} for nb in NOTEBOOKS}
    assert outside["error"] == "ModuleNotFoundError" and outside["name"] == "helpers", \
        "outside the project the cell must fail with the plain import error"


@pytest.fixture(scope="module")
def local_repository(tmp_path_factory):
    """A git repository holding the project's package and requirements-colab.txt, to clone from a file:// URL."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("origin") / "cifar10-notebooks"
    shutil.copytree(h.PROJECT_ROOT / "helpers", repo / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(h.PROJECT_ROOT / "requirements-colab.txt", repo)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "project"]):
        subprocess.run(git + args, check=True, capture_output=True)
    return repo


def test_on_colab_the_first_cell_clones_the_repository_and_imports_helpers(tmp_path, local_repository):
    report = run_cells({"colab": [str(tmp_path), setup_part(NOTEBOOKS[0])]}, colab=True,
                       repo_url=f"file://{local_repository}")
    clone = tmp_path / "cifar10-notebooks"
    assert report["colab"] == {"helpers": str(clone / "helpers" / "__init__.py")}
    assert (clone / ".git").is_dir()


def test_on_colab_a_clone_that_fails_stops_the_cell_with_one_clear_line(tmp_path):
    report = run_cells({"colab": [str(tmp_path), setup_part(NOTEBOOKS[0])]}, colab=True,
                       repo_url=f"file://{tmp_path}/no-such-repository")
    error = report["colab"]
    assert error["error"] == "SetupFailed"
    [line] = error["rendered"]
    assert line.startswith("Setup failed: git clone failed: fatal: ") and "no-such-repository" in line
    assert "Check REPO_URL" in line and "\n" not in line


def test_on_colab_an_install_that_fails_stops_the_cell_with_one_clear_line(tmp_path):
    (tmp_path / "cifar10-notebooks").mkdir()  # a clone cut short: no requirements file in it
    report = run_cells({"colab": [str(tmp_path), setup_part(NOTEBOOKS[0])]}, colab=True)
    [line] = report["colab"]["rendered"]
    assert line.startswith("Setup failed: pip install failed: ERROR: ") and "requirements-colab.txt" in line
    assert f"delete {tmp_path / 'cifar10-notebooks'} if it is incomplete" in line


def test_storage_dir_prefers_the_variables_then_google_drive_then_the_machine(tmp_path, monkeypatch, own_cache):
    from helpers import context
    monkeypatch.delenv("RESULTS_DIR", raising=False)
    monkeypatch.setattr(context, "DRIVE", tmp_path / "drive" / "MyDrive")
    assert h.storage_dir("checkpoints") == own_cache / "cifar10-notebooks" / "checkpoints", \
        "outside the clone: a run started in one clone resumes in another"
    assert h.storage_dir("results") == h.PROJECT_ROOT / "results"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert h.storage_dir("checkpoints") == Path.home() / ".cache" / "cifar10-notebooks" / "checkpoints"
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    assert h.storage_dir("checkpoints") == tmp_path / "drive" / "MyDrive" / "cifar10-notebooks" / "checkpoints"
    assert h.storage_dir("results") == tmp_path / "drive" / "MyDrive" / "cifar10-notebooks" / "results"
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "mine"))
    assert h.storage_dir("checkpoints") == tmp_path / "mine"
    assert h.storage_dir("results").parent.name == "cifar10-notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_keeps_checkpoints_and_records_where_storage_dir_says(path, tmp_path, monkeypatch):
    from helpers import launch
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "r"))
    params = launch.full_run_parameters(launch.nbformat.read(path, as_version=4))
    assert params["CHECKPOINT"].parent == tmp_path / "c" and params["RESULTS_DIR"] == tmp_path / "r"
    assert params.get("KAGGLE_DIR", tmp_path / "c" / "kaggle") == tmp_path / "c" / "kaggle"

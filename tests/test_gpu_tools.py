"""tools/gpu-weights.sh: a GPU call's copy of the project keeps only the released weights of the notebooks it runs."""
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu-weights.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def run(args: list[str], cwd: Path, held: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env={"PATH": "/usr/bin:/bin", "HELD": str(held)},
                          capture_output=True, text=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with three released files (1 MiB each) and a small .gpu-bundle/."""
    root = tmp_path / "project"
    (root / "weights").mkdir(parents=True)
    (root / ".gpu-bundle").mkdir()
    (root / ".gpu-bundle" / "run.sh").write_text("echo\n")
    (root / ".gitignore").write_text("/.gpu-bundle/\n")
    for name in ("01_a", "02_b", "04_c"):
        (root / "weights" / f"{name}.safetensors").write_bytes(name.encode() * (2**20 // 4))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    return root


def test_hold_keeps_the_named_notebooks_weights_and_restore_puts_the_rest_back(project: Path, tmp_path: Path):
    held = tmp_path / "held"
    result = run(["hold", "notebooks/04_c.ipynb"], project, held)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (project / "weights").iterdir()) == ["04_c.safetensors"]
    assert sorted(p.name for p in held.iterdir()) == ["01_a.safetensors", "02_b.safetensors"]
    assert "the call's copy: 1 MiB of 64" in result.stdout
    # a second hold starts from everything: 01 comes back, 04 goes
    assert run(["hold", "notebooks/01_a.ipynb"], project, held).returncode == 0
    assert sorted(p.name for p in (project / "weights").iterdir()) == ["01_a.safetensors"]
    result = run(["restore"], project, held)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (project / "weights").iterdir()) == [
        "01_a.safetensors", "02_b.safetensors", "04_c.safetensors"]
    assert subprocess.run(["git", "diff", "--name-only"], cwd=project, capture_output=True,  # tree = index
                          text=True).stdout == ""


def test_restore_keeps_a_file_a_call_released_since(project: Path, tmp_path: Path):
    held = tmp_path / "held"
    assert run(["hold"], project, held).returncode == 0
    (project / "weights" / "02_b.safetensors").write_bytes(b"new weights")
    result = run(["restore"], project, held)
    assert "kept the newer weights/02_b.safetensors" in result.stdout
    assert (project / "weights" / "02_b.safetensors").read_bytes() == b"new weights"
    assert not (held / "02_b.safetensors").exists()


def test_hold_fails_when_the_copy_would_exceed_the_limit(project: Path, tmp_path: Path):
    (project / ".gpu-bundle" / "wheels.bin").write_bytes(b"\0" * (64 * 2**20))
    result = run(["hold", "notebooks/01_a.ipynb"], project, tmp_path / "held")
    assert result.returncode == 1
    assert "over the limit" in result.stderr

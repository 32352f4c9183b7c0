"""The notebooks' first cell finds `helpers` without `pip install -e .` when the notebook sits in the project."""
import json
import subprocess
import sys
import textwrap

import helpers as h

NOTEBOOKS = sorted((h.PROJECT_ROOT / "notebooks").glob("0*.ipynb"))

# Runs in a fresh interpreter: hide the editable install, then execute each notebook's first cell (IPython syntax
# turned into Python) from the notebooks folder, and once from a folder outside the project.
SCRIPT = textwrap.dedent("""
    import json, os, sys
    from IPython.core.inputtransformer2 import TransformerManager

    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    clean_path = list(sys.path)

    def forget_helpers():
        for name in [m for m in sys.modules if m == "helpers" or m.startswith("helpers.")]:
            del sys.modules[name]
        sys.path[:] = clean_path

    try:
        import helpers
        hidden = False
    except ModuleNotFoundError:
        hidden = True
    found = {}
    for path, source in json.loads(sys.argv[1]).items():
        forget_helpers()
        namespace = {}
        exec(TransformerManager().transform_cell(source), namespace)
        found[path] = namespace["h"].__file__
    forget_helpers()
    os.chdir(sys.argv[2])
    try:
        exec(TransformerManager().transform_cell(source), {})
        outside = "imported"
    except ModuleNotFoundError as err:
        outside = err.name
    print(json.dumps({"hidden": hidden, "found": found, "outside": outside}))
""")


def test_first_cell_puts_the_project_on_the_path_when_helpers_is_not_installed(tmp_path):
    first_cells = {str(nb): "".join(json.loads(nb.read_text())["cells"][1]["source"]) for nb in NOTEBOOKS}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(first_cells), str(tmp_path)],
                            cwd=h.PROJECT_ROOT / "notebooks", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hidden"], "the editable install was not hidden: this test would prove nothing"
    assert set(report["found"]) == set(first_cells)
    assert all(path == str(h.PROJECT_ROOT / "helpers" / "__init__.py") for path in report["found"].values())
    assert report["outside"] == "helpers", "outside the project the cell must fail with the plain import error"

"""`pytest --nbval notebooks/`: run each cell as Jupyter does, and a stored run's parameters not at all.

- nbval 0.11 executes cells with `store_history=False`, so IPython cannot see a cell's trailing `;` and shows the
  figure a plotting call returns a second time, as a result (nbval#194, open): a cell that stored one figure would
  then never match. Cells run here with their history stored, as in Jupyter and papermill.
- A notebook run with papermill overrides (`-p EPOCHS 20`) is stored with the cell papermill injected: the reader
  sees them, and the smoke run skips it, so it keeps its own parameters.
"""
import pytest


def pytest_configure(config):
    try:
        from nbval.kernel import RunningKernel
    except ImportError:  # without nbval there is nothing to run
        return

    def execute_cell_input(self, cell_input, allow_stdin=None):
        return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)

    RunningKernel.execute_cell_input = execute_cell_input


def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            item.add_marker(pytest.mark.skip(reason="papermill's overrides of a stored run; the smoke run keeps "
                                                    "its own parameters"))

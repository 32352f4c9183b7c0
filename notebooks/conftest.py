"""`pytest --nbval notebooks/`: run each cell as Jupyter does, and a stored run's parameters not at all.

- nbval 0.11 executes cells with `store_history=False`, so IPython cannot see a cell's trailing `;` and shows the
  figure a plotting call returns a second time, as a result (nbval#194, open): a cell that stored one figure would
  then never match. Cells run here with their history stored, as in Jupyter and papermill.
- Under pytest-xdist (`make test`) a notebook's cells run in order in one kernel, so all of them go to one worker
  (the `xdist_group` mark, with `--dist loadgroup`); the kernel talks over IPC sockets of its own names
  (`helpers.notebook.local_kernel_manager`), as `make run`'s do: jupyter_client's TCP ports are chosen free and
  released until the kernel binds them, so kernels started at once by the four workers of the two suites can be
  given the same (jupyter_client#487: "Kernel died before replying to kernel_info", "Invalid Signature").
- A notebook run with papermill overrides (`-p EPOCHS 20`) is stored with the cell papermill injected: the reader
  sees them, and the smoke run skips it, so it keeps its own parameters.
"""
import pytest


def pytest_configure(config):
    try:
        from nbval import kernel
    except ImportError:  # without nbval there is nothing to run
        return
    from jupyter_client.manager import KernelManager

    from helpers.notebook import local_kernel_manager

    kernel.KernelManager = local_kernel_manager(KernelManager)

    def execute_cell_input(self, cell_input, allow_stdin=None):
        return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)

    kernel.RunningKernel.execute_cell_input = execute_cell_input


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the marks
def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None:  # one notebook's cells in order, in one kernel: in one pytest-xdist worker
            item.add_marker(pytest.mark.xdist_group(f"nbval-{item.path.name}"))
        if cell is not None and "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            item.add_marker(pytest.mark.skip(reason="papermill's overrides of a stored run; the smoke run keeps "
                                                    "its own parameters"))

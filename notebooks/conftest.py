"""`pytest --nbval notebooks/`: run each cell as Jupyter does, and a stored run's parameters not at all.

- nbval 0.11 executes cells with `store_history=False`, so IPython cannot see a cell's trailing `;` and shows the
  figure a plotting call returns a second time, as a result (nbval#194, open): a cell that stored one figure would
  then never match. Cells run here with their history stored, as in Jupyter and papermill.
- Under pytest-xdist (`make test`) a notebook's cells run in order in one kernel, so all of them go to one worker
  (the `xdist_group` mark, with `--dist loadgroup`).
- A notebook run with papermill overrides (`-p EPOCHS 20`) is stored with the cell papermill injected: the reader
  sees them, and the smoke run skips it, so it keeps its own parameters.
"""
import itertools
import os
import socket

import pytest


def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under pytest-xdist
    if worker:
        draw_kernel_ports_from_a_range_of_this_worker(int(worker.removeprefix("gw")))
    try:
        from nbval.kernel import RunningKernel
    except ImportError:  # without nbval there is nothing to run
        return

    def execute_cell_input(self, cell_input, allow_stdin=None):
        return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)

    RunningKernel.execute_cell_input = execute_cell_input


def draw_kernel_ports_from_a_range_of_this_worker(index: int, size: int = 1000) -> None:
    """jupyter_client picks a kernel's five ports by binding port 0 and closing the socket; two workers starting
    kernels at the same moment can be given the same ports (jupyter_client#487), and a client then talks to the
    other worker's kernel ("Invalid Signature", "Kernel didn't respond"). Each worker here takes free ports, in turn,
    from a range of its own below the ephemeral ones (10000 + index * size, ...)."""
    from jupyter_client.connect import LocalPortCache

    first = 10000 + index * size
    turn = itertools.cycle(range(first, first + size))

    def find_available_port(self, ip: str) -> int:
        for port in itertools.islice(turn, size):
            if port in self.currently_used_ports:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((ip, port))
                except OSError:
                    continue
            self.currently_used_ports.add(port)
            return port
        raise RuntimeError(f"no free port in {first}-{first + size - 1}")

    LocalPortCache.find_available_port = find_available_port


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the marks
def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None:  # one notebook's cells in order, in one kernel: in one pytest-xdist worker
            item.add_marker(pytest.mark.xdist_group(f"nbval-{item.path.name}"))
        if cell is not None and "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            item.add_marker(pytest.mark.skip(reason="papermill's overrides of a stored run; the smoke run keeps "
                                                    "its own parameters"))

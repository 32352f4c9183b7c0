"""`pytest --nbval notebooks/`: run each cell as Jupyter does.

nbval 0.11 executes cells with `store_history=False`, so IPython cannot see a cell's trailing `;` and shows the
figure a plotting call returns a second time, as a result (nbval#194, open): a cell that stored one figure would
then never match. Cells run here with their history stored, as in Jupyter and papermill.
"""


def pytest_configure(config):
    try:
        from nbval.kernel import RunningKernel
    except ImportError:  # without nbval there is nothing to run
        return

    def execute_cell_input(self, cell_input, allow_stdin=None):
        return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)

    RunningKernel.execute_cell_input = execute_cell_input

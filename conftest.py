"""Every pytest session of the project (`make test` runs tests/ and notebooks/ in pytest-xdist workers).

In a pytest-xdist worker, before any kernel starts, COLUMNS=80 and LINES=24, which the workers set for their own
output, are removed: a kernel started from a worker would inherit them, and tqdm would cut its text bars to a
terminal's 80 columns, which no notebook has.
"""
import os


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)

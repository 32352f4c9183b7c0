"""Executed notebooks as a reader sees them: run one with every figure saved, then tidy its outputs.

    python -m helpers.notebook clean FILE...

`execute` runs a notebook with papermill (as `make run` does) and cleans the result; `clean` is that last step,
for any executed notebook (the GPU runner calls the command above on every notebook it brings back). A saved
notebook does not replay a terminal: every redraw of a progress bar, the carriage returns and cursor moves it is
made of, and the warnings libraries print would all show on GitHub. `clean` keeps what a reader should see:
- each progress bar's final state, one line (a text bar's as a terminal would end up showing it; a widget bar's
  from the widget state saved with the notebook) shown as ordinary output, not in stderr's red, and no bar that
  closed itself (tqdm's `leave=False`);
- consecutive outputs of one stream merged into one;
- no known library noise (`LIBRARY_NOISE`);
- figures, tables and the project's own messages as they are.
It is idempotent: a clean notebook comes out unchanged.
"""
from __future__ import annotations

import argparse
import functools
import html
import os
import re
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nbformat
from nbformat import NotebookNode

# The kernel draws figures with the inline backend, which saves each one as a PNG in the notebook. ipykernel picks it
# only when MPLBACKEND is unset: with MPLBACKEND=Agg (common on servers and in CI images) no figure would be saved.
KERNEL_ENVIRONMENT = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}

# Messages of libraries that tell a reader of this project nothing; each is dropped where it stands alone.
LIBRARY_NOISE = {
    # tqdm.auto without ipywidgets (the GPU machine, a bare kernel) falls back to text bars, which is fine
    "tqdm": re.compile(r"IProgress not found\. Please update jupyter and ipywidgets\..*"),
    # torch-lr-finder's range_test ends with this line (its own placeholder left unformatted)
    "torch-lr-finder": re.compile(r"Learning rate search finished\. See the graph with \{finder_name\}\.plot\(\)"),
    # albumentations looks for a newer version online at import unless NO_ALBUMENTATIONS_UPDATE is set
    "albumentations": re.compile(r"A new version of Albumentations is available: .*"),
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10  # characters of a progress bar drawn from a widget's state, as tqdm draws them in a notebook

# A warning as Python's `warnings` module prints it: "file:line: Category: message", then the source line indented.
_WARNING = re.compile(r"^\S[^\n]*?:\d+: \w*Warning: (?P<message>[^\n]*)\n(?:[ \t]+[^\n]*\n)?", re.MULTILINE)
_TERMINAL_CONTROL = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z]|\x1b[@-_]|\r|\n|\x08)")
_PROGRESS_METER = re.compile(r"\d+%\|.*\|")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `values` set, restored afterwards (a kernel started inside inherits them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.cache
def local_kernel_manager(base: type | None = None) -> type:
    """A kernel manager class whose kernels talk over local (IPC) sockets where the system has them (not Windows),
    each kernel's under names of its own in the temporary folder. `base`: a jupyter_client kernel manager class
    (default: `AsyncKernelManager`, which `execute` uses; the tests give nbval's `KernelManager`)."""
    from jupyter_client.localinterfaces import localhost
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(base or AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "tcp" if os.name == "nt" else "ipc"

        @default("ip")
        def _default_ip(self) -> str:
            # jupyter_client names IPC sockets "kernel-ipc-1" to "-5" in the working directory, numbered by the
            # first names not yet on disk: two kernels starting at once from one folder (two test workers, two
            # `make run`s) could take the same names and read each other's messages ("Invalid Signature"). TCP
            # ports are no better: chosen free, then released until the kernel binds them.
            if self.transport == "ipc":
                return os.path.join(tempfile.gettempdir(), f"kernel-{uuid.uuid4().hex}-ipc")
            return localhost()

    return LocalKernelManager


def execute(notebook: str | os.PathLike | NotebookNode, output: str | os.PathLike, **papermill_kwargs) -> None:
    """Execute `notebook` with papermill into `output` and `clean` it (also when a cell fails).

    Every figure is saved as a PNG, whatever MPLBACKEND says (`KERNEL_ENVIRONMENT`). The kernel is reached over
    local (IPC) sockets where the system has them (not Windows): no TCP ports open to the network, and so no kernel
    warning about them.
    """
    import papermill

    source = notebook if isinstance(notebook, NotebookNode) else str(notebook)
    try:
        with _environment(KERNEL_ENVIRONMENT):
            papermill.execute_notebook(source, str(output), kernel_manager_class=local_kernel_manager(),
                                       **papermill_kwargs)
    finally:
        if Path(output).exists():
            clean(output)


def clean(path: str | os.PathLike) -> bool:
    """Leave the executed notebook at `path` as a reader should see it (see the module's docstring); returns
    whether anything changed. Running it again changes nothing."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    clean_outputs(notebook)
    after = nbformat.writes(notebook)
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def clean_outputs(notebook: NotebookNode) -> NotebookNode:
    """`clean` on a notebook in memory; returns it."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            if WIDGET_VIEW in output.get("data", {}):
                output = _widget_as_text(output, state)
                if output is None:
                    continue
            outputs.append(output)
        outputs = _merge_streams(outputs)
        for output in outputs:
            if output.output_type == "stream":
                output.text = _drop_library_noise(render_terminal(output.text))
                if _PROGRESS_METER.search(output.text) and all(map(_PROGRESS_METER.search,
                                                                   output.text.splitlines())):
                    output.name = "stdout"  # tqdm writes to stderr, which shows as an error's red box
        cell.outputs = _merge_streams([o for o in outputs if o.output_type != "stream" or o.text.strip()])
    if state and not any(WIDGET_VIEW in o.get("data", {}) for c in notebook.cells if c.cell_type == "code"
                         for o in c.outputs):
        del notebook.metadata["widgets"]  # only tqdm's bars used it, and they are text now
    return notebook


def render_terminal(text: str) -> str:
    """What a terminal shows after printing `text`: carriage returns, backspaces and cursor moves (tqdm's redraws)
    applied, other escape codes (colours) dropped, trailing spaces and blank lines at either end removed. Text
    without control characters comes back unchanged."""
    if not any(c in text for c in "\r\x1b\x08"):
        return text
    lines, row, column = [""], 0, 0
    for token in _TERMINAL_CONTROL.split(text):
        if token == "\n":
            row, column = row + 1, 0
        elif token == "\r":
            column = 0
        elif token == "\x08":
            column = max(column - 1, 0)
        elif token.startswith("\x1b"):
            count = int(token[2:-1]) if token[2:-1].isdigit() else 1
            if token.endswith("A"):  # cursor up
                row = max(row - count, 0)
            elif token.endswith("B"):  # cursor down
                row += count
            elif token.endswith("K"):  # erase to the end of the line
                lines[row] = lines[row][:column]
        elif token:
            line = lines[row].ljust(column)
            lines[row] = line[:column] + token + line[column + len(token):]
            column += len(token)
        lines.extend("" for _ in range(row + 1 - len(lines)))
    shown = "\n".join(line.rstrip() for line in lines).strip("\n")
    return shown + "\n" if shown else ""


def _drop_library_noise(text: str) -> str:
    def noise(message: str) -> bool:
        return any(pattern.fullmatch(message.strip()) for pattern in LIBRARY_NOISE.values())

    text = _WARNING.sub(lambda m: "" if noise(m["message"]) else m[0], text)
    return "".join(line for line in text.splitlines(keepends=True) if not noise(line))


def _merge_streams(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """Consecutive outputs of the same stream as one."""
    merged: list[NotebookNode] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def _widget_as_text(output: NotebookNode, state: dict) -> NotebookNode | None:
    """A tqdm widget bar as the line a text bar would have ended on; None for one that closed itself (or whose
    state was not saved); any other widget unchanged."""
    data = output["data"]
    bar = _tqdm_widget(data[WIDGET_VIEW].get("model_id", ""), state)
    if bar is None:
        plain = data.get("text/plain", "")
        return None if _PROGRESS_METER.search(plain if isinstance(plain, str) else "".join(plain)) else output
    left, progress, right = bar
    if progress.get("bar_style") not in ("success", "danger"):  # tqdm closes finished leave=False bars unstyled
        return None
    fraction = progress.get("value", 0) / progress["max"] if progress.get("max") else 0.0
    filled = min(BAR_WIDTH, int(fraction * BAR_WIDTH))
    drawn = "█" * filled + " " * (BAR_WIDTH - filled)
    text = html.unescape(f"{left.get('value', '')}|{drawn}|{right.get('value', '')}").replace("\u2007", " ")
    return nbformat.v4.new_output("stream", name="stdout", text=text.strip() + "\n")


def _tqdm_widget(model_id: str, state: dict) -> tuple[dict, dict, dict] | None:
    """The states of the three widgets tqdm.notebook draws a bar with (HTML, FloatProgress, HTML), if `model_id`
    is such a bar."""
    box = state.get(model_id)
    if box is None or box.get("model_name") != "HBoxModel":
        return None
    children = [state.get(child.removeprefix("IPY_MODEL_"), {}) for child in box["state"].get("children", [])]
    if [c.get("model_name") for c in children] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, progress, right = (c["state"] for c in children)
    return left, progress, right


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebook", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cleaner = commands.add_parser("clean", help="tidy executed notebooks in place (see `helpers.notebook`)")
    cleaner.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"{path}: {'cleaned' if clean(path) else 'already clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs notebooks/walkthrough.ipynb top to bottom in a fresh kernel and writes it back with its
outputs (what a repository browser shows): `python notebooks/refresh.py`. tests/test_notebook.py
runs it the same way and checks what it prints."""

from __future__ import annotations

import os

import nbclient
import nbformat

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "walkthrough.ipynb")
CELL_TIMEOUT = 600  # seconds; the whole notebook takes about a minute on 2 cores


def executed(path: str = NOTEBOOK) -> nbformat.NotebookNode:
    """The notebook at `path`, run top to bottom in a fresh kernel (in its own directory); raises
    `nbclient.exceptions.CellExecutionError` at the first cell that fails."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
    )
    client.execute()
    return notebook


if __name__ == "__main__":
    nbformat.write(executed(), NOTEBOOK)

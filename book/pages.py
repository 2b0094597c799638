"""Load what a book page defines: the code cells tagged ``model``, executed in a fresh namespace.

The models live on the pages; tests and benchmarks use this to get the very classes the book
trains, without copying them.
"""

from __future__ import annotations

from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]  # the repository


def model_namespace(page: str) -> dict:
    """Execute the ``model``-tagged cells of ``book/<page>.md`` and return their namespace."""
    notebook = jupytext.read(ROOT / "book" / f"{page}.md")
    cells = [c for c in notebook.cells if c.cell_type == "code" and "model" in c.metadata.get("tags", [])]
    if not cells:
        raise LookupError(f"book/{page}.md has no code cell tagged 'model'")
    namespace: dict = {"__name__": f"book_{page}"}
    for cell in cells:
        exec(compile(cell.source, f"book/{page}.md", "exec"), namespace)
    return namespace


def model_class(page: str, name: str):
    return model_namespace(page)[name]

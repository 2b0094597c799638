"""Write the paired .ipynb of every model page and of the lab, so that papermill, Colab and Binder
open it as is.

    python tools/pair_notebooks.py           # write/refresh book/<name>.ipynb for every row of pages.TABLE and the lab
    python tools/pair_notebooks.py --check   # exit 1, naming the pages, when a pair is missing or stale

The MyST source ``book/<name>.md`` is the one that is edited; its pair ``book/<name>.ipynb`` is
written from it, with no outputs, deterministic cell ids and the jupytext pairing metadata
(``formats: ipynb,md:myst``), so that

    papermill book/hebae.ipynb out.ipynb -p lam 0.3

runs the page exactly as written. The book build skips the .ipynb files (``exclude_patterns`` in
``_config.yml``). After adding a row to ``pages.TABLE`` or editing a model page, run this tool
(``make pairs``); ``tests/test_pairs.py`` fails while a pair is missing or out of step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FORMATS = "ipynb,md:myst"
# Notebook pages that are not models but are run by readers as notebooks (Colab, Binder,
# papermill), so they have a pair too: the one-hour lab.
COURSE_PAGES = ("lab",)


def model_pages() -> list[str]:
    """The names of the model pages: one per row of ``pages.TABLE``."""
    sys.path.insert(0, str(BOOK))
    try:
        import pages
    finally:
        sys.path.remove(str(BOOK))
    return [m.name for m in pages.TABLE]


def paired_pages() -> list[str]:
    """Every page with a paired .ipynb: the model pages, then :data:`COURSE_PAGES`."""
    return [*model_pages(), *COURSE_PAGES]


def paired(source: Path) -> nbformat.NotebookNode:
    """The .ipynb pair of a MyST notebook: its cells, no outputs, stable ids, a python3 kernel."""
    notebook = jupytext.read(source)
    cells = []
    for i, cell in enumerate(notebook.cells):
        cell = nbformat.from_dict(dict(cell))
        cell["id"] = f"{source.stem}-{i:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    notebook.cells = cells
    metadata = {key: value for key, value in notebook.metadata.items() if key != "jupytext"}
    metadata["jupytext"] = {"formats": FORMATS}
    metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    metadata["language_info"] = {"name": "python"}
    notebook.metadata = metadata
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    return notebook


def cell_key(cell) -> tuple:
    """What must agree between a page and its pair: kind, source and tags of each cell."""
    return cell.cell_type, cell.source.strip("\n"), tuple(cell.metadata.get("tags", ()))


def problems(name: str) -> list[str]:
    """Why ``book/<name>.ipynb`` is not a faithful pair of ``book/<name>.md`` (empty when it is)."""
    source, pair = BOOK / f"{name}.md", BOOK / f"{name}.ipynb"
    if not source.exists():
        return [f"book/{name}.md: no such page (a row of pages.TABLE or COURSE_PAGES names it)"]
    if not pair.exists():
        return [f"book/{name}.ipynb is missing"]
    page, nb = jupytext.read(source), nbformat.read(pair, as_version=4)
    found = []
    want, have = [cell_key(c) for c in page.cells], [cell_key(c) for c in nb.cells]
    if want != have:
        first = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
        found.append(f"book/{name}.ipynb differs from book/{name}.md from cell {first} on ({len(have)} cells against {len(want)})")
    if any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None) for c in nb.cells):
        found.append(f"book/{name}.ipynb holds outputs (pairs are committed without them)")
    if nb.metadata.get("kernelspec", {}).get("name") != page.metadata.get("kernelspec", {}).get("name", "python3"):
        found.append(f"book/{name}.ipynb names another kernel than book/{name}.md")
    return found


def write(name: str) -> bool:
    """Write ``book/<name>.ipynb`` from its page; True when the file changed."""
    pair = BOOK / f"{name}.ipynb"
    text = nbformat.writes(paired(BOOK / f"{name}.md")) + "\n"
    if pair.exists() and pair.read_text() == text:
        return False
    tmp = pair.with_name(f".{pair.name}.tmp")
    tmp.write_text(text)
    tmp.replace(pair)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a pair is missing or stale")
    args = parser.parse_args(argv)
    names = paired_pages()
    if args.check:
        found = [p for name in names for p in problems(name)]
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print("run: make pairs (or python tools/pair_notebooks.py)", file=sys.stderr)
        return 1 if found else 0
    for name in names:
        print(f"book/{name}.md -> book/{name}.ipynb ({'written' if write(name) else 'up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a book page through papermill, straight from its MyST source.

    python -m hebae.papermill book/hebae.md out.ipynb -p lam 0.3 -p seed 1

The source is converted with jupytext to a temporary notebook; every option after the two
paths goes to papermill unchanged (``-p``, ``-y``, ``--log-output``, ...). The page executes
with its own folder as working directory, as in the book build.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

USAGE = "usage: python -m hebae.papermill SOURCE.md|SOURCE.ipynb OUTPUT.ipynb [papermill options]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    source, output, options = Path(argv[0]), Path(argv[1]), argv[2:]
    if not source.exists():
        print(f"hebae.papermill: no such notebook: {source}", file=sys.stderr)
        return 2
    if source.suffix not in (".md", ".ipynb"):
        print(f"hebae.papermill: SOURCE must be a .md (MyST) or .ipynb notebook; got {source}", file=sys.stderr)
        return 2

    import jupytext
    from papermill.cli import papermill as papermill_cli

    with tempfile.TemporaryDirectory() as tmp:
        notebook = source
        if source.suffix == ".md":
            notebook = Path(tmp) / (source.stem + ".ipynb")
            jupytext.write(jupytext.read(source), notebook)
        args = [str(notebook), str(output), "--cwd", str(source.resolve().parent), *options]
        try:
            papermill_cli.main(args=args, prog_name="hebae.papermill", standalone_mode=False)
        except SystemExit as stop:
            return int(stop.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Copy the results table that the MNIST chapter writes (results/mnist-claims.md) into README.md,
between the markers ``<!-- mnist-claims:start -->`` and ``<!-- mnist-claims:end -->``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- mnist-claims:start -->", "<!-- mnist-claims:end -->"


def main() -> int:
    table = ROOT / "results" / "mnist-claims.md"
    readme = ROOT / "README.md"
    if not table.exists():
        print(f"sync_readme: {table} does not exist yet; build the book first", file=sys.stderr)
        return 1
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"sync_readme: README.md lacks the markers {START} ... {END}", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{START}\n{table.read_text().strip()}\n{END}{tail}"
    if updated != text:
        tmp = readme.with_suffix(".md.tmp")
        tmp.write_text(updated)
        os.replace(tmp, readme)
        print("sync_readme: README.md results table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

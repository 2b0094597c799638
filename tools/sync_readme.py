"""Copy the results tables that the chapters write into README.md: ``results/<name>.md`` goes
between the markers ``<!-- <name>:start -->`` and ``<!-- <name>:end -->``, for each name in
``BLOCKS`` (the MNIST chapter's claims, the landscape, CelebA and amortisation chapters' answers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ("mnist-claims", "landscape-answers", "celeba-answers", "amortisation-answers")


def main() -> int:
    readme = ROOT / "README.md"
    text = updated = readme.read_text()
    for name in BLOCKS:
        table = ROOT / "results" / f"{name}.md"
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if not table.exists():
            print(f"sync_readme: {table} does not exist yet; build the book first", file=sys.stderr)
            return 1
        if start not in updated or end not in updated:
            print(f"sync_readme: README.md lacks the markers {start} ... {end}", file=sys.stderr)
            return 1
        head, rest = updated.split(start, 1)
        _, tail = rest.split(end, 1)
        updated = f"{head}{start}\n{table.read_text().strip()}\n{end}{tail}"
    if updated != text:
        tmp = readme.with_suffix(".md.tmp")
        tmp.write_text(updated)
        os.replace(tmp, readme)
        print("sync_readme: README.md results table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

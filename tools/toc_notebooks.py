"""Convert every MyST notebook listed in _toc.yml to .ipynb (for nbval); plain pages are skipped."""

from __future__ import annotations

import argparse
from pathlib import Path

import jupytext
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(toc: dict) -> list[str]:
    """Every ``file`` entry of a jupyter-book table of contents, in order."""
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return files


def is_notebook(path: Path) -> bool:
    text = path.read_text()
    return text.startswith("---") and "jupytext:" in text.split("---", 2)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the .ipynb files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in toc_files(toc):
        source = ROOT / f"{name}.md"
        if source.exists() and is_notebook(source):
            target = args.out / (name.replace("/", "__") + ".ipynb")
            jupytext.write(jupytext.read(source), target)
            print(f"{source.relative_to(ROOT)} -> {target}")


if __name__ == "__main__":
    main()

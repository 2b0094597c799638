"""The paired .ipynb of every model page and of the lab: present, in step with its MyST source, and
runnable by papermill exactly as the design promises (``papermill book/hebae.ipynb out.ipynb -p lam 0.3``)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from hebae.paths import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "tools"))
import pair_notebooks  # noqa: E402

BOOK = PROJECT_ROOT / "book"
PAGES = pair_notebooks.paired_pages()  # the model pages and the lab (pair_notebooks.COURSE_PAGES)
BIN = Path(sys.executable).parent  # papermill's console script lives beside the interpreter


@pytest.mark.parametrize("name", PAGES)
def test_every_model_page_has_a_pair_in_step(name):
    found = pair_notebooks.problems(name)
    assert not found, "\n".join(found) + "\nrun: make pairs (python tools/pair_notebooks.py)"


def test_no_pair_without_its_model_page():
    stray = sorted(p.name for p in BOOK.glob("*.ipynb") if p.stem not in PAGES)
    assert not stray, f"book/ holds .ipynb files of no model page in pages.TABLE nor COURSE_PAGES: {stray}; delete them or add the row"


def test_the_lab_is_paired_and_in_the_book():
    """The lab's Colab button opens book/lab.ipynb: the pair must exist and the page be in the book."""
    import toc_notebooks
    import yaml

    assert "lab" in PAGES and "lab" not in pair_notebooks.model_pages()
    assert not pair_notebooks.problems("lab")
    assert "book/lab" in toc_notebooks.toc_files(yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text()))


def test_the_pairing_tool_is_idempotent_and_detects_a_stale_pair(tmp_path, monkeypatch):
    source = tmp_path / "toy.md"
    source.write_text((BOOK / "vae.md").read_text())
    monkeypatch.setattr(pair_notebooks, "BOOK", tmp_path)
    assert pair_notebooks.problems("toy") == ["book/toy.ipynb is missing"]
    assert pair_notebooks.write("toy") and not pair_notebooks.write("toy")  # written once, then unchanged
    assert pair_notebooks.problems("toy") == []
    notebook = json.loads((tmp_path / "toy.ipynb").read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert notebook["metadata"]["jupytext"]["formats"] == "ipynb,md:myst"
    assert all(c.get("outputs", []) == [] for c in notebook["cells"])
    source.write_text(source.read_text().replace("seed: int = 0", "seed: int = 1"))
    assert any("differs" in p for p in pair_notebooks.problems("toy"))


def parameters(name: str) -> list[str]:
    notebook = jupytext.read(BOOK / f"{name}.md")
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    return [line.split("=")[0].split(":")[0].strip() for line in cell.source.splitlines() if "=" in line and not line.lstrip().startswith(("#", "from", "import"))]


@pytest.mark.parametrize("name", PAGES)
def test_papermill_lists_every_parameter_with_its_type_and_meaning(name):
    out = subprocess.run(
        [str(BIN / "papermill"), "--help-notebook", f"book/{name}.ipynb"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    from papermill import inspect_notebook  # what --help-notebook prints, as data

    listed = inspect_notebook(str(BOOK / f"{name}.ipynb"))
    for param in parameters(name):
        assert param in listed and f"  {param}: " in out.stdout, f"papermill --help-notebook book/{name}.ipynb does not list {param}:\n{out.stdout}"
        default = listed[param]["default"]
        hint = "Optional[...]" if default == "None" else type(ast.literal_eval(default)).__name__
        assert listed[param]["inferred_type_name"] != "None", (
            f"book/{name}.md: parameter {param!r} has no type for papermill (it prints 'Unknown type'); annotate it in the "
            f"parameters cell: `{param}: {hint} = {default}  # meaning` (Optional from typing)"
        )
        assert listed[param]["help"], f"book/{name}.md: parameter {param!r} has no comment saying what it means"


def test_literal_papermill_command_trains_and_stores_a_new_run(tmp_path, shared_data):
    """The design's command, as written, from the repository root (smoke scale, scratch results)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEBAE_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HEBAE_DATA_DIR=str(shared_data),
        HEBAE_RESULTS_DIR=str(tmp_path / "results"),
        HEBAE_FIGURES_DIR=str(tmp_path / "figures"),
    )
    out_nb = tmp_path / "out.ipynb"
    cmd = ["papermill", "book/hebae.ipynb", str(out_nb), "-p", "lam", "0.3", "-p", "profile", "smoke"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    (run,) = (tmp_path / "results").glob("hebae-*")
    config = json.loads((run / "config.json").read_text())
    assert config["lam"] == 0.3 and config["profile"] == "smoke"
    executed = nbformat.read(out_nb, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)

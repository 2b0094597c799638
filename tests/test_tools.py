import json
import subprocess
import sys

from hebae.paths import PROJECT_ROOT


def test_toc_notebooks_converts_every_notebook_page(tmp_path):
    out = subprocess.run(
        [sys.executable, "tools/toc_notebooks.py", "--out", str(tmp_path)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert {"book__vae.ipynb", "book__hebae.ipynb", "book__mnist-results.ipynb"} <= set(names)
    notebook = json.loads((tmp_path / "book__hebae.ipynb").read_text())
    tags = [c["metadata"].get("tags", []) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert ["parameters"] in tags and ["model"] in tags  # papermill and pages.py find their cells


def test_papermill_wrapper_explains_its_usage(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hebae.papermill"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "usage: python -m hebae.papermill" in out.stderr
    out = subprocess.run([sys.executable, "-m", "hebae.papermill", "book/nope.md", str(tmp_path / "o.ipynb")], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "no such notebook: book/nope.md" in out.stderr

"""The book's model table, and the model classes loaded from the pages that define them.

Adding a model to the book is one new page (``book/<name>.md``, its class in a code cell tagged
``model``) plus one row in :data:`TABLE`. Everything else (the default λ, the model's own
options, whether it has a posterior) the class itself declares (see ``hebae.autoencoder``).

This module is found by name (``import pages``): pages executed by jupyter-book and papermill
run in ``book/``; pytest and the Makefile put ``book/`` on the path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]  # the repository


@dataclass(frozen=True)
class Model:
    name: str  # id in configs and results; its page is book/<name>.md
    cls: str  # the class the page defines
    label: str  # in legends and titles
    color: str  # one colour per model in every figure


TABLE = (
    Model("vae", "VAE", "VAE", "C0"),
    Model("wae", "WAE", "WAE", "C2"),
    Model("hebae", "HEBAE", "HEBAE", "C3"),
    Model("ae", "AE", "AE", "C7"),
    Model("rae", "RAE", "RAE-L2", "C1"),
    Model("twostage", "TwoStageVAE", "two-stage VAE", "C4"),
    Model("vamp", "VampPrior", "VampPrior", "C9"),
    Model("vlae", "VLAE", "VLAE", "C5"),
    Model("hf", "HouseholderVAE", "VAE + HF", "C6"),
    Model("savae", "SAVAE", "SA-VAE", "C8"),
    Model("aae", "AAE", "AAE", "darkgoldenrod"),
    Model("waegan", "WAEGAN", "WAE-GAN", "slateblue"),
    Model("maskaae", "MaskAAE", "MaskAAE", "magenta"),
    Model("flexae", "FlexAE", "FlexAE", "teal"),
    Model("iaf", "IAFVAE", "VAE + IAF", "navy"),
)
LABELS = {m.name: m.label for m in TABLE}
COLORS = {m.name: m.color for m in TABLE}


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


@functools.cache
def classes() -> dict[str, type]:
    """Every model of the table, by name, as its page defines it."""
    return {m.name: model_class(m.name, m.cls) for m in TABLE}


def default_lam(name: str, dataset: str) -> float:
    return classes()[name].default_lam[dataset]

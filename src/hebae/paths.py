"""Where things live: project root, data root, results root, figures."""

from __future__ import annotations

import os
from pathlib import Path


def _find_project_root() -> Path:
    # The package is installed editable from src/, so the repository is two levels up.
    # Fall back to the working directory for a non-editable install.
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists() and (here / "_toc.yml").exists():
        return here
    return Path.cwd()


PROJECT_ROOT = _find_project_root()


def data_root() -> Path:
    """The data root: ``$HEBAE_DATA_DIR`` if set, else ``data/`` in the project."""
    env = os.environ.get("HEBAE_DATA_DIR")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "data"


def staging_root() -> Path:
    """Where derived data (extracted archives, decoded-image caches) is written.

    Always the project's own ``data/`` folder, so a shared, read-only data root pointed to by
    ``$HEBAE_DATA_DIR`` is never written into.
    """
    return PROJECT_ROOT / "data"


def results_root() -> Path:
    """Run artifacts: ``$HEBAE_RESULTS_DIR`` if set, else ``results/`` in the project."""
    env = os.environ.get("HEBAE_RESULTS_DIR")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "results"


def figures_dir() -> Path:
    """Figures written by the book: ``$HEBAE_FIGURES_DIR`` if set, else ``figures/``."""
    env = os.environ.get("HEBAE_FIGURES_DIR")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "figures"

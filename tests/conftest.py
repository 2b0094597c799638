import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data root: $HEBAE_DATA_DIR, else ../shared/data beside the repo."""
    root = Path(os.environ.get("HEBAE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"no shared data at {root}; set HEBAE_DATA_DIR")
    return root


@pytest.fixture
def staging(tmp_path, monkeypatch) -> Path:
    """Redirect derived data (extractions, caches) into a temporary folder."""
    stage = tmp_path / "stage"
    monkeypatch.setattr("hebae.data.staging_root", lambda: stage)
    return stage

#!/usr/bin/env bash
# Create .venv (if absent) and install the pinned environment into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip==26.1.1"
# minepy must exist before pip resolves the project, or pip would try (and fail) to build it.
bash tools/build_minepy.sh "$VENV/bin/python"
"$VENV/bin/python" -m pip install --quiet -e ".[book,test,cluster]"  # cluster: submitit, whose local executor tests the SLURM path
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
# book/ on the environment's path, so pages that import the model table (`import pages`) also run
# outside book/: `papermill book/vamp.ipynb out.ipynb` from the repository root, any kernel.
"$VENV/bin/python" - <<'PY'
import pathlib, sysconfig
pathlib.Path(sysconfig.get_paths()["purelib"], "hebae_book.pth").write_text(str(pathlib.Path("book").resolve()) + "\n")
PY
"$VENV/bin/python" tools/fetch_fid_weights.py
# The browser check (tests/test_browser.py) drives Debian's Chromium through playwright; playwright's
# own browser download is never used. Installed here when missing and apt is usable (as root).
if ! command -v chromium >/dev/null && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium (apt) for the browser check"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: no chromium and no root apt-get: the browser check will skip (CI=true: fail); install Debian's chromium" >&2
  fi
fi

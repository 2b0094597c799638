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
"$VENV/bin/python" -m pip install --quiet -e ".[book,test]"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
"$VENV/bin/python" tools/fetch_fid_weights.py

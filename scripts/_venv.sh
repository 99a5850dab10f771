# Shared by scripts/run and scripts/test: a project virtualenv with pinned packages.
# Usage: . scripts/_venv.sh requirements-file
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON_BIN --version)"
  "$PYTHON_BIN" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt "$1" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing $1 (first run takes about a minute)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$1" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip check
  touch "$stamp"
fi
PY=.venv/bin/python

# Shared by scripts/demo and scripts/test: create .venv in the project root and install
# clipsieve into it (editable) with the extras named in $EXTRAS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip_quiet() {
  # pip warns about every missing local index folder of this machine's pip config; hide those.
  .venv/bin/python -m pip "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2)
}
pip_quiet install -q --upgrade pip >/dev/null
# torch first, pinned: on this project's CI machines the pin resolves to a local CPU build.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  pip_quiet install -q "torch==2.13.0"
fi
pip_quiet install -q -e ".${EXTRAS:+[$EXTRAS]}"

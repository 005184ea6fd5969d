#!/usr/bin/env bash
# Creates the virtual environment at .venv (if missing) and installs the project with the given extras.
#   scripts/install.sh [EXTRAS]     EXTRAS defaults to "backend"; e.g. "backend,dev"
# torch: a torch already in .venv is kept (a CUDA build, say); otherwise torch==$ISO3D_TORCH_VERSION (2.13.0)
# is installed, which takes the local CPU build where the machine provides one. Everything else is installed
# with constraints.txt plus that torch pinned, so pip never swaps torch for another build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-backend}"

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
  done
fi
[ -n "$python" ] || { echo "install: no python3 found (Python 3.11 or newer is needed)" >&2; exit 2; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
venv_python=.venv/bin/python

# Already installed with these extras from these pyproject.toml and constraints.txt: nothing to do (pip's check of
# an installed environment alone takes ~20 s of CPU on a 2-core machine, before every test run). The stamp is
# written after a successful install; remove .venv/iso3d-installed to install again.
stamp=.venv/iso3d-installed
wanted="extras=${extras} $(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
rm -f "$stamp"

if ! "$venv_python" -c "import torch" >/dev/null 2>&1; then
  "$venv_python" -m pip install -q "torch==${ISO3D_TORCH_VERSION:-2.13.0}"
fi
torch_version=$("$venv_python" -c "import torch; print(torch.__version__.split('+')[0])")

constraints=.venv/iso3d-constraints.txt
cp constraints.txt "$constraints"
echo "torch==${torch_version}" >> "$constraints"
"$venv_python" -m pip install -q -c "$constraints" -e ".[${extras}]"
echo "$wanted" > "$stamp"

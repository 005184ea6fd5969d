#!/usr/bin/env bash
# Installs the backend into .venv and runs the main job on its default: a 4-view preview of the bundled example
# image with the tiny, untrained model on the CPU. Output: out/preview.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh backend
exec .venv/bin/iso3d preview examples/example.png --model tiny --device cpu --out out/preview.png "$@"

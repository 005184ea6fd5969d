#!/usr/bin/env bash
# Installs the backend into .venv and runs the main job on its default: the bundled example image with the tiny,
# UNTRAINED model on the CPU: a 4-view preview (out/preview.png), then a short SDS generation that writes a mesh
# (out/asset.glb, .job folder beside it) and a turntable PNG (out/asset_turntable.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh backend
.venv/bin/iso3d preview examples/example.png --model tiny --device cpu --out out/preview.png --quiet
rm -rf out/asset.job
exec .venv/bin/iso3d generate examples/example.png --model tiny --device cpu --preset tiny --out out/asset.glb --quiet

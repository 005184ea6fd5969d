"""A model checkpoint with random weights, in the reference layout, for benchmarks that load a model the way
``iso3d generate --checkpoint PATH`` loads the published ``isotropic3d.ckpt`` (no weights can be downloaded here).

    python bench/random_checkpoint.py --out /tmp/isotropic3d_random.ckpt           # published sizes (~6.5 GB)
    python bench/random_checkpoint.py --tiny --out /tmp/tiny_random.safetensors    # the tiny model (tests)

``.ckpt`` / ``.pt`` / ``.pth``: a bare torch state dict, as the published file is (float32, the reference's key
names, the published sizes: the loader assumes them for this format); ``.safetensors``: the model's sizes kept
in its metadata (the only format for ``--tiny``). The file is written whole or not at all.
bench/generate.py ``--checkpoint`` then measures a run's model set-up on the real load path (read, cast, moved to
the device) instead of building random weights on the device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the checkpoint file to write (.ckpt, .pt, .pth or .safetensors)")
    parser.add_argument("--tiny", action="store_true", help="the tiny model's sizes (only as .safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="the random weights' seed (default 0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix not in CHECKPOINT_SUFFIXES:
        print(f"random checkpoint: --out {out}: the file must end in {', '.join(CHECKPOINT_SUFFIXES)}", file=sys.stderr)
        return 2
    if args.tiny and out.suffix != ".safetensors":
        print("random checkpoint: --tiny needs a .safetensors file (the only format that keeps the model's sizes)",
              file=sys.stderr)
        return 2
    from backend.models.multiview_model import build_random_published_model, build_tiny_model, save_checkpoint

    started = time.perf_counter()
    model = build_tiny_model(seed=args.seed) if args.tiny else build_random_published_model(seed=args.seed)
    save_checkpoint(model, out)
    print(f"wrote {out} ({out.stat().st_size / 1e9:.2f} GB, {model.name}) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

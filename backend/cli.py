"""`iso3d`: the backend's command line. Each subcommand lives in backend/commands/."""

from __future__ import annotations

import argparse
import sys

from backend import __version__
from backend.commands import export, generate, preview, serve

COMMANDS = [preview, generate, export, serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iso3d", description="Isotropic3D image-to-3D backend")
    parser.add_argument("--version", action="version", version=f"iso3d {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers).set_defaults(run=command.run)
    serve.add_keys_parser(subparsers).set_defaults(run=serve.run_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from backend.errors import UserError

    try:
        return args.run(args)
    except UserError as error:
        print(f"iso3d: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iso3d: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # out of GPU memory is not a bug, but the user can act on it
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            print("iso3d: error: out of GPU memory (try --dtype float16, fewer --views, or another GPU)", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

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
    from blender_addon.core.parent_watch import exit_with_parent

    exit_with_parent()  # started by the add-on (ISO3D_PARENT_PID): stop when that Blender dies, even by SIGKILL
    args = build_parser().parse_args(argv)
    from backend.errors import run_command

    return run_command("iso3d", lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())

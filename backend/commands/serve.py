"""`iso3d serve`: the ZeroMQ backend that the Blender add-on talks to; `iso3d keys DIR`: CURVE key pairs."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from backend.commands.model_options import add_model_arguments, load_model_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="run the backend service for the Blender add-on",
        description="Serve preview and generate jobs over ZeroMQ. Loopback by default; any other address needs "
        "CURVE keys.",
    )
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ address (default tcp://127.0.0.1:5555)")
    parser.add_argument("--data", default="iso3d-data", help="folder for jobs and their results (default ./iso3d-data)")
    parser.add_argument("--curve-secret-key", metavar="FILE", help="the server's CURVE certificate (.key_secret)")
    parser.add_argument(
        "--curve-allowed-clients", metavar="DIR", help="folder of allowed client public certificates (.key)"
    )
    parser.add_argument("--max-gpu-memory", type=float, default=0.0, metavar="GB",
                        help="GiB of GPU memory a generate job may use (default: the device's); a job that cannot "
                        "fit fails at its start with the preset that fits")
    add_model_arguments(parser, default_compile="auto")  # a long-lived process: the compile pays off
    return parser


def run(args: argparse.Namespace) -> int:
    from backend.errors import UserError
    from backend.service.auth import CurveKeys
    from backend.service.server import BackendServer

    keys = None
    if args.curve_secret_key or args.curve_allowed_clients:
        if not (args.curve_secret_key and args.curve_allowed_clients):
            raise UserError("CURVE needs both --curve-secret-key and --curve-allowed-clients")
        keys = CurveKeys(Path(args.curve_secret_key), Path(args.curve_allowed_clients))
    from backend.service.auth import is_loopback

    if not is_loopback(args.bind) and keys is None:
        BackendServer.refuse_unauthenticated(args.bind)
    if args.max_gpu_memory < 0:
        raise UserError(f"--max-gpu-memory must be positive GiB (got {args.max_gpu_memory})")
    model = load_model_from_args(args)
    server = BackendServer(model, args.data, args.bind, keys, max_gpu_memory=args.max_gpu_memory)
    signal.signal(signal.SIGTERM, lambda *_: server.stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: server.stop_requested.set())
    print(f"iso3d serve: listening on {server.endpoint} with {model.name} on {model.device}", flush=True)
    server.serve_forever()
    print("iso3d serve: stopped", flush=True)
    return 0


def add_keys_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("keys", help="make CURVE key pairs for a remote backend")
    parser.add_argument("folder", help="where to write server/ and clients/ certificates")
    return parser


def run_keys(args: argparse.Namespace) -> int:
    from backend.service.auth import generate_keys

    for name, path in generate_keys(args.folder).items():
        print(f"{name}: {path}")
    return 0

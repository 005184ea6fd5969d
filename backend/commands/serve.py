"""`iso3d serve`: the ZeroMQ backend that the Blender add-on talks to; `iso3d keys DIR`: CURVE key pairs."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from backend.commands.model_options import add_model_arguments, load_model_from_args
from backend.service.options import ServiceOptions
from backend.settings import add_setting_arguments, overrides_from_args, settings_from_dict
from blender_addon.core.addresses import DEFAULT_ADDRESS


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="run the backend service for the Blender add-on",
        description="Serve preview and generate jobs over ZeroMQ. Loopback by default; any other address needs "
        "CURVE keys.",
    )
    parser.add_argument("--bind", default=DEFAULT_ADDRESS, help=f"ZeroMQ address (default {DEFAULT_ADDRESS})")
    parser.add_argument("--data", default="iso3d-data", help="folder for jobs and their results (default ./iso3d-data)")
    parser.add_argument("--curve-secret-key", metavar="FILE", help="the server's CURVE certificate (.key_secret)")
    parser.add_argument(
        "--curve-allowed-clients", metavar="DIR|FILE",
        help="folder of allowed client public certificates (its *.key files, re-read at every connection), or "
        "exactly one certificate",
    )
    parser.add_argument("--curve-admin-key", metavar="FILE",
                        help="public certificate of an admin client, which may list, watch and cancel every job")
    parser.add_argument("--prune", action="store_true",
                        help="delete finished jobs by --keep-days / --max-data-gb, then exit")
    parser.add_argument("--no-warmup", action="store_true",
                        help="do not compile the preview path right after start (it is skipped with --compile off); "
                        "the first preview then pays the compilation")
    add_setting_arguments(parser, ServiceOptions(), title="limits (disk, inputs, retries)")
    add_model_arguments(parser, default_compile="auto")  # a long-lived process: the compile pays off
    return parser


def run(args: argparse.Namespace) -> int:
    from backend.errors import UserError
    from backend.service.auth import CurveKeys, is_loopback, public_key
    from backend.service.server import BackendServer

    options = settings_from_dict(ServiceOptions(), overrides_from_args(args))
    if args.prune:
        return prune_data(args.data, options)
    keys = None
    if args.curve_secret_key or args.curve_allowed_clients:
        if not (args.curve_secret_key and args.curve_allowed_clients):
            raise UserError("CURVE needs both --curve-secret-key and --curve-allowed-clients")
        keys = CurveKeys(Path(args.curve_secret_key), Path(args.curve_allowed_clients))
    admin_key = public_key(Path(args.curve_admin_key)) if args.curve_admin_key else None
    if not is_loopback(args.bind) and keys is None:
        BackendServer.refuse_unauthenticated(args.bind)
    from backend.service.data_lock import DataFolderLock

    lock = DataFolderLock(args.data)  # a second server on the folder stops here, before loading a model
    try:
        model = load_model_from_args(args)
        compiled = args.compile not in ("off", "auto") or (args.compile == "auto" and model.device.type == "cuda")
        server = BackendServer(model, args.data, args.bind, keys, options=options, admin_key=admin_key, lock=lock,
                               warmup=compiled and not args.no_warmup)
    except BaseException:
        lock.release()
        raise
    # SIGTERM / Ctrl-C: the loop ends, the running job saves its state (within --stop_timeout) and is resumed by
    # the next start
    signal.signal(signal.SIGTERM, lambda *_: server.stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: server.stop_requested.set())
    print(f"iso3d serve: listening on {server.endpoint} with {model.name} on {model.device} "
          f"(warm-up: {server.warmup.state})", flush=True)
    server.serve_forever()
    print("iso3d serve: stopped", flush=True)
    return 0


def prune_data(data: str, options: ServiceOptions) -> int:
    """``iso3d serve --prune``: the retention policy applied once, under the data folder's lock."""
    from backend.errors import UserError
    from backend.service.data_lock import DataFolderLock
    from backend.service.job_store import JobStore
    from backend.service.retention import folder_bytes, prune

    if options.keep_days is None and options.max_data_gb is None:
        raise UserError("--prune needs --keep-days and/or --max-data-gb")
    lock = DataFolderLock(data)
    try:
        store = JobStore(data)
        deleted = prune(store, options.keep_days, options.max_data_gb)
        print(f"iso3d serve: pruned {len(deleted)} finished jobs; the jobs now take "
              f"{folder_bytes(store.root) / 1e9:.3f} GB")
    finally:
        lock.release()
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

"""Objaverse (v1) objects by UID through the ``objaverse`` package: cache location, UID check, download.

The package keeps its cache folder in module globals (``BASE_PATH``, ``_VERSIONED_PATH``), so ``use_cache`` sets
both. It downloads ``object-paths.json.gz`` (the UID -> file map) on first use and each GLB on demand; with a
cache that already holds them, nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import socket
import urllib.error

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".objaverse")
NETWORK_TIMEOUT_S = 60.0


class ObjaverseUnavailable(RuntimeError):
    """Objaverse cannot be reached or read; the message says what to do instead."""


def use_cache(cache_dir: str | None):
    """Points the objaverse package at ``cache_dir`` (default ``~/.objaverse``); returns the module."""
    try:
        import objaverse
    except ImportError:
        raise ObjaverseUnavailable(
            "Objaverse UIDs need the objaverse package: pip install 'isotropic3d-blender[training]'"
        ) from None
    cache = os.path.abspath(os.path.expanduser(cache_dir or DEFAULT_CACHE))
    objaverse.BASE_PATH = cache
    objaverse._VERSIONED_PATH = os.path.join(cache, "hf-objaverse-v1")
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    return objaverse


def known_uids(cache_dir: str | None) -> set[str]:
    """All Objaverse v1 UIDs (downloads the UID -> path map into the cache when missing)."""
    objaverse = use_cache(cache_dir)
    try:
        return set(objaverse._load_object_paths())
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ObjaverseUnavailable(
            f"cannot load the Objaverse object list into {objaverse._VERSIONED_PATH} (offline? {reason}); "
            "render local files instead or fill the cache (--objaverse-cache) on a machine with network"
        ) from None
    except (EOFError, gzip.BadGzipFile, ValueError) as error:
        raise ObjaverseUnavailable(
            f"the cached Objaverse object list in {objaverse._VERSIONED_PATH} is damaged ({error}); delete "
            "object-paths.json.gz there and run again"
        ) from None


def download(uid: str, cache_dir: str | None) -> str:
    """Local path of the object's GLB, downloading it into the cache when missing."""
    objaverse = use_cache(cache_dir)
    try:
        paths = objaverse.load_objects([uid], download_processes=1)
    except (urllib.error.URLError, OSError) as error:
        raise ObjaverseUnavailable(f"cannot download Objaverse object {uid}: {getattr(error, 'reason', error)}") from None
    if uid not in paths:
        raise ObjaverseUnavailable(f"unknown Objaverse UID {uid}")
    return paths[uid]

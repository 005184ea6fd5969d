"""What the add-on session needs from the preferences, as plain values (no bpy), and the rule that turns them into a
connection: loopback or CURVE keys, and Blender's offline mode.

The caller (``preferences.session_settings``, the UI timer, an operator) reads the preferences and builds a
``SessionSettings``; the session receives it with each call and never reads the UI modules itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .addresses import AddressError, is_loopback


class ConnectionRefused(ConnectionError):
    """The preferences do not allow this connection; the message says why in plain words. A ConnectionError, so
    that whatever handles a connection that fails also handles one that is not allowed."""


@dataclass(frozen=True)
class SessionSettings:
    """The preferences the session works with. Paths are absolute ("" = not set)."""

    address: str  # the backend's ZeroMQ address, tcp://HOST:PORT
    server_public_key: str = ""  # the backend's CURVE public certificate file
    client_secret_key: str = ""  # this client's CURVE secret certificate file
    online_access: bool = True  # Blender's "allow online access" (False: only a loopback backend)
    previews_folder: str = ""  # where streamed preview images and baked textures are written
    client_name: str = "blender"  # how the backend lists this client


def connection_target(settings: SessionSettings) -> tuple[str, tuple[bytes, bytes, bytes] | None]:
    """(address, CURVE keys or None) for a connection, or ConnectionRefused saying why not."""
    address = settings.address
    try:
        loopback = is_loopback(address)
    except AddressError:
        raise ConnectionRefused(f"The backend address '{address}' is not valid: use tcp://HOST:PORT") from None
    if not loopback and not settings.online_access:
        raise ConnectionRefused(
            f"Blender is in offline mode, so the add-on will not connect to the remote backend {address}: allow "
            "online access (Preferences > System > Network) or use a backend on this machine (127.0.0.1)"
        )
    server_key, client_key = settings.server_public_key, settings.client_secret_key
    if not (server_key and client_key):
        if loopback:
            return address, None
        raise ConnectionRefused(
            f"A remote backend ({address}) needs CURVE keys: set the server's public key file and this client's "
            "secret key file in the add-on preferences (`iso3d keys DIR` makes them)"
        )
    for label, path in (("server public key", server_key), ("client secret key", client_key)):
        if not os.path.isfile(path):
            raise ConnectionRefused(f"The {label} file {path} does not exist")
    from .client import BackendClient

    try:  # keys are used whenever both are set: a remote backend, or one reached through an SSH tunnel
        return address, BackendClient.load_curve_keys(server_key, client_key)
    except (OSError, ValueError) as error:
        raise ConnectionRefused(f"The CURVE key files could not be read: {error}") from None

"""Who may connect: loopback binds are open to local processes; any other bind requires ZeroMQ CURVE.

With CURVE the server has a key pair and a folder (or file) of allowed client public keys (ZeroMQ certificate
files, as ``iso3d keys`` writes them); a peer without an allowed key completes no handshake and gets nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.errors import UserError
from blender_addon.core import addresses


def is_loopback(bind: str) -> bool:
    """Whether ``bind`` stays on this machine, decided by ``blender_addon.core.addresses.is_loopback`` (the one rule the
    add-on applies too); an address it cannot read is a UserError, one line on the command line."""
    try:
        return addresses.is_loopback(bind)
    except addresses.AddressError as error:
        raise UserError(str(error)) from None


@dataclass
class CurveKeys:
    server_secret_file: Path  # the server's certificate with its secret key (mode 0600)
    allowed_clients: Path  # a folder of client public certificates (its *.key files), or exactly one certificate


def check_private(path: Path) -> None:
    """UserError unless the secret key file ``path`` is readable by its owner only."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise UserError(f"the secret key {path} is readable by group or others (mode {mode & 0o777:o}): "
                        f"chmod 600 {path}")


def generate_keys(folder: str | Path) -> dict[str, Path]:
    """Write a server and a client key pair (ZeroMQ certificate files) into ``folder``; secret keys get mode 0600."""
    import zmq.auth

    folder = Path(folder)
    (folder / "server").mkdir(parents=True, exist_ok=True)
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(folder / "server", "server")
    client_public, client_secret = zmq.auth.create_certificates(folder / "clients", "blender")
    # the secret client certificate should not sit among the allowed public keys
    private = folder / "client_secret"
    private.mkdir(mode=0o700, exist_ok=True)
    client_secret = Path(client_secret).replace(private / Path(client_secret).name)
    for secret in (Path(server_secret), client_secret):
        secret.chmod(0o600)
    return {
        "server_public": Path(server_public),
        "server_secret": Path(server_secret),
        "client_public": Path(client_public),
        "client_secret": client_secret,
    }


def public_key(path: Path) -> str:
    """The Z85 public key of a certificate file (as the authenticator names a client)."""
    import zmq.auth

    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the CURVE key {path}: {error}") from None
    return public.decode("ascii")


class AllowedClients:
    """The allowed client keys: exactly the certificate named, or the public certificates (``*.key``) in the folder
    named. Read again at every handshake, so a key added or removed counts from the next connection on, without a
    restart (SIGHUP needs no handling)."""

    def __init__(self, location: Path):
        self.location = location

    def keys(self) -> set[str]:
        files = sorted(self.location.glob("*.key")) if self.location.is_dir() else [self.location]
        allowed = set()
        for path in files:
            try:
                allowed.add(public_key(path))
            except UserError:
                continue  # an unreadable file admits nobody
        return allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return key.decode("ascii", "replace") in self.keys()


def secure_socket(context, socket, keys: CurveKeys):
    """Make ``socket`` a CURVE server that accepts only the allowed client keys. Returns the authenticator
    thread, which must be stopped when the server stops."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    if not keys.server_secret_file.is_file():
        raise UserError(f"CURVE server key {keys.server_secret_file} does not exist")
    if not keys.allowed_clients.exists():
        raise UserError(f"allowed client keys {keys.allowed_clients} do not exist")
    check_private(keys.server_secret_file)
    try:
        public, secret = zmq.auth.load_certificate(keys.server_secret_file)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the CURVE key {keys.server_secret_file}: {error}") from None
    if secret is None:
        raise UserError(f"{keys.server_secret_file} holds no secret key (give the .key_secret file)")
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve_callback(domain="*", credentials_provider=AllowedClients(keys.allowed_clients))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator

"""ZeroMQ endpoint addresses and the one decision whether an address stays on this machine (standard library only).

``is_loopback`` decides whether CURVE keys are required: the backend refuses to bind a non-loopback address
without keys, and the add-on refuses to connect to one without them. Both sides call this function, so the two
can never disagree. An address is loopback when it can only be reached from this machine: ``ipc://`` and
``inproc://`` endpoints, ``localhost``, and IP literals in 127.0.0.0/8 or ``::1`` (IPv4-mapped forms such as
``[::ffff:127.0.0.1]`` included). Everything else is not: the wildcards ``*``, ``0.0.0.0`` and ``::`` (every
interface), other addresses, and host or interface names other than ``localhost`` (a name such as
``127.example.com`` may resolve anywhere).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"  # where the backend listens and the add-on connects unless told otherwise
LOCAL_SCHEMES = ("ipc", "inproc")  # endpoints that never leave this machine
LOOPBACK_NAMES = ("localhost",)


class AddressError(ValueError):
    """An address that is not ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``; the message says so."""


class Endpoint(NamedTuple):
    scheme: str  # "tcp", "ipc" or "inproc"
    host: str  # tcp: the host without IPv6 brackets ("*" = every interface); ipc/inproc: the path or name
    port: str  # tcp: the port digits, or "*" (any free port, when binding); "" for ipc/inproc


def split_address(address: str) -> Endpoint:
    """The parts of a ZeroMQ address, or AddressError naming the address and the expected forms."""
    problem = (f"cannot read the address {address!r}: expected tcp://HOST:PORT (e.g. {DEFAULT_ADDRESS}), "
               "ipc://PATH or inproc://NAME")
    scheme, separator, rest = address.strip().partition("://")
    scheme = scheme.lower()
    if not separator or not rest:
        raise AddressError(problem)
    if scheme in LOCAL_SCHEMES:
        return Endpoint(scheme, rest, "")
    if scheme != "tcp":
        raise AddressError(problem)
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not (port == "*" or (port.isdigit() and int(port) <= 65535)):
        raise AddressError(problem)
    if host.startswith("[") != host.endswith("]"):
        raise AddressError(problem)
    return Endpoint(scheme, host[1:-1] if host.startswith("[") else host, port)


def is_loopback(address: str) -> bool:
    """True when ``address`` can only be reached from this machine (see the module's docstring for the rules);
    AddressError when it cannot be read."""
    endpoint = split_address(address)
    if endpoint.scheme in LOCAL_SCHEMES:
        return True
    host = endpoint.host
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host or interface name, or the wildcard "*": reachable from outside
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback

"""The one loopback rule: it decides whether CURVE keys are required, for the backend's bind and the add-on's
connection alike."""

import pytest

from backend.errors import UserError
from backend.service import auth
from blender_addon.core.addresses import AddressError, is_loopback, split_address

LOOPBACK = [
    "tcp://127.0.0.1:5555",
    "tcp://127.0.0.2:5555",  # all of 127.0.0.0/8 is loopback
    "tcp://127.255.255.254:1",
    "tcp://localhost:5555",
    "tcp://LOCALHOST:5555",
    "tcp://[::1]:5555",
    "tcp://::1:5555",  # ZeroMQ also reads an unbracketed IPv6 host up to the last colon
    "tcp://[::ffff:127.0.0.1]:5555",  # IPv4-mapped loopback
    "tcp://127.0.0.1:*",  # any free port, on loopback
    "ipc:///tmp/iso3d.sock",
    "inproc://backend",
]

NOT_LOOPBACK = [
    "tcp://0.0.0.0:5555",  # every interface
    "tcp://*:5555",
    "tcp://[::]:5555",
    "tcp://[::ffff:0.0.0.0]:5555",
    "tcp://192.168.1.20:5555",
    "tcp://10.0.0.1:5555",
    "tcp://[2001:db8::1]:5555",
    "tcp://[::ffff:192.168.1.20]:5555",
    "tcp://gpu-server:5555",  # host names resolve anywhere
    "tcp://gpu-server.example.com:5555",
    "tcp://127.example.com:5555",  # looks like 127.x but is a name: the old add-on copy took it for loopback
    "tcp://localhost.example.com:5555",
    "tcp://eth0:5555",  # an interface name (bind)
]

UNREADABLE = [
    "",
    "127.0.0.1:5555",  # no scheme
    "http://127.0.0.1:5555",
    "tcp://127.0.0.1",  # no port
    "tcp://127.0.0.1:",
    "tcp://127.0.0.1:port",
    "tcp://127.0.0.1:70000",
    "tcp://:5555",
    "tcp://[::1:5555",
    "ipc://",
]


@pytest.mark.parametrize("address", LOOPBACK)
def test_loopback_addresses(address):
    assert is_loopback(address) is True


@pytest.mark.parametrize("address", NOT_LOOPBACK)
def test_addresses_reachable_from_outside(address):
    assert is_loopback(address) is False


@pytest.mark.parametrize("address", UNREADABLE)
def test_unreadable_addresses_are_refused_in_words(address):
    with pytest.raises(AddressError, match="expected tcp://HOST:PORT"):
        is_loopback(address)


def test_the_backend_applies_the_same_rule_and_reports_a_bad_bind_as_a_user_error():
    for address in LOOPBACK + NOT_LOOPBACK:
        assert auth.is_loopback(address) is is_loopback(address), address
    with pytest.raises(UserError, match="cannot read the address 'tcp://127.0.0.1'"):
        auth.is_loopback("tcp://127.0.0.1")


def test_split_address():
    assert split_address("tcp://[::1]:5555") == ("tcp", "::1", "5555")
    assert split_address(" tcp://example.com:*") == ("tcp", "example.com", "*")
    assert split_address("ipc:///tmp/x") == ("ipc", "/tmp/x", "")

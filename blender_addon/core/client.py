"""ZeroMQ DEALER client of the backend (no bpy): connect, handshake, submit, cancel, attach, and a non-blocking
``poll`` that returns decoded messages. The Blender side drains it from a timer; tests drive it directly.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import deque
from pathlib import Path

from . import protocol


class MissingDependency(ConnectionError):
    """The bundled ZeroMQ library (pyzmq) does not load in this Blender; the message says why and what to do."""


_zmq_problem: str | None = None  # why pyzmq failed to load (cached: a failed binary import is not retried)


def load_zmq():
    """The ``zmq`` module, or MissingDependency in words (e.g. a wheel built for another Python: ``undefined
    symbol PyType_FromMetaclass`` when a Python 3.12+ wheel lands in Blender 4.2's Python 3.11)."""
    global _zmq_problem
    if _zmq_problem is None:
        try:
            import zmq

            return zmq
        except (ImportError, OSError) as error:
            import sys

            version = "%d.%d" % sys.version_info[:2]
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            detail = re.sub(r"[^\s:]*[/\\]([^\s/\\:]+)", r"\1", detail)  # file names, not install paths
            _zmq_problem = (
                f"The ZeroMQ library bundled with the add-on (pyzmq) does not load in this Blender's Python {version} "
                f"({detail}). Install the Isotropic3D zip made for this Blender version "
                f"(isotropic3d-...-py{version.replace('.', '')}.zip) and restart Blender")
    raise MissingDependency(_zmq_problem)


def zmq_problem() -> str:
    """Why pyzmq cannot load ("" when it loads); for the panel."""
    try:
        load_zmq()
    except MissingDependency as error:
        return str(error)
    return ""


class BackendClient:
    """One connection to one backend. ``curve``: (server public key, client public key, client secret key) as
    z85 bytes for a remote backend; None on loopback."""

    def __init__(self, address: str, curve: tuple[bytes, bytes, bytes] | None = None, client_name: str = "blender"):
        zmq = load_zmq()

        self.address = address
        self.client_name = client_name
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.SNDHWM, 1000)
        if curve is not None:
            server_public, client_public, client_secret = curve
            self.socket.curve_serverkey = server_public
            self.socket.curve_publickey = client_public
            self.socket.curve_secretkey = client_secret
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.socket.connect(address)
        self.link_up = False  # the transport is connected now (from the socket's monitor)
        self.links = 0  # how many times the transport came up; > 1 means it reconnected (a restarted backend)
        self.outbox: deque[list[bytes]] = deque()
        # messages received by a wait_for after the one it waited for: the next poll returns them first
        self.unread: deque[protocol.Message] = deque()
        self.welcome: protocol.Message | None = None
        self.last_reply: float | None = None

    @staticmethod
    def load_curve_keys(server_public_file: str | Path, client_secret_file: str | Path) -> tuple[bytes, bytes, bytes]:
        """Keys from ZeroMQ certificate files (``iso3d keys`` writes them)."""
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        client_public, client_secret = zmq.auth.load_certificate(str(client_secret_file))
        if client_secret is None:
            raise ValueError(f"{client_secret_file} holds no secret key")
        return server_public, client_public, client_secret

    def close(self) -> None:
        try:
            self.socket.disable_monitor()
        except Exception:  # noqa: BLE001 - already closed
            pass
        self.monitor.close(0)
        self.socket.close(0)

    def _watch_link(self) -> None:
        """Follow the transport's connect/disconnect events (never blocks)."""
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_CONNECTED:
                self.link_up = True
                self.links += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.link_up = False

    # -- sending ----------------------------------------------------------------------------------------------
    def send(self, frames: list[bytes]) -> None:
        """Queue a message; it leaves as soon as the connection is up (never blocks)."""
        if len(self.outbox) >= 10_000:
            raise ConnectionError(f"the backend at {self.address} has not been reachable for a while")
        self.outbox.append(frames)
        self._flush()

    def _flush(self) -> None:
        import zmq

        while self.outbox:
            try:
                self.socket.send_multipart(self.outbox[0], zmq.NOBLOCK)
            except zmq.Again:  # not connected yet (or the handshake is still running)
                return
            self.outbox.popleft()

    @property
    def connected(self) -> bool:
        """True once a reply has come back (the backend is there and accepted us)."""
        return self.last_reply is not None

    def hello(self) -> None:
        self.send(protocol.encode("hello", client=self.client_name, version=str(protocol.PROTOCOL_VERSION)))

    def ping(self, token: str = "") -> None:
        self.send(protocol.encode("ping", token=token))

    def submit(self, kind: str, image_png: bytes | None, settings: dict, name: str = "") -> str:
        """Queue a job; returns the request id echoed by the ``accepted`` reply. ``image_png``: the input image
        (None for a job kind that takes none, ``finish``)."""
        request = uuid.uuid4().hex[:12]
        payloads = [] if image_png is None else [protocol.png_payload(image_png)]
        self.send(protocol.encode("submit", payloads, kind=kind, settings=settings, request=request, name=name))
        return request

    def withdraw(self, request: str) -> bool:
        """Drop the submission ``request`` if it has not left yet (the backend is unreachable); True if dropped."""
        for frames in list(self.outbox):
            header = json.loads(bytes(frames[0]))  # our own header, made by protocol.encode
            if header.get("type") == "submit" and header.get("request") == request:
                self.outbox.remove(frames)
                return True
        return False

    def cancel(self, job: str) -> None:
        self.send(protocol.encode("cancel", job=job))

    def attach(self, job: str) -> None:
        self.send(protocol.encode("attach", job=job))

    def resume(self, job: str) -> str:
        """Resume a cancelled generate job from its saved step; returns the request id echoed by the ``accepted``
        reply (then come its events)."""
        request = uuid.uuid4().hex[:12]
        self.send(protocol.encode("resume", job=job, request=request))
        return request

    def list_jobs(self) -> None:
        self.send(protocol.encode("list"))

    # -- receiving --------------------------------------------------------------------------------------------
    def poll(self, max_messages: int = 64) -> list[protocol.Message]:
        """Messages waiting now (never blocks). A message the client cannot read becomes a local ``error``."""
        import zmq

        self._watch_link()
        self._flush()
        messages = list(self.unread)
        self.unread.clear()
        for _ in range(max_messages):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                message = protocol.decode(frames, "server")
            except protocol.ProtocolError as error:
                message = protocol.Message("error", {"code": error.code, "message": f"from the backend: {error}"})
            if message.type == "welcome":
                self.welcome = message
            self.last_reply = time.monotonic()
            messages.append(message)
        return messages

    def wait_for(self, predicate, timeout: float = 30.0, collected: list | None = None) -> protocol.Message:
        """Poll until a message satisfies ``predicate`` (for scripts and tests; the add-on never waits)."""
        import zmq

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.unread:
                self.socket.poll(50, zmq.POLLIN)
            messages = self.poll()
            for index, message in enumerate(messages):
                if collected is not None:
                    collected.append(message)
                if predicate(message):
                    # what came in the same batch after it is kept for the next poll/wait_for, never dropped
                    self.unread.extendleft(reversed(messages[index + 1:]))
                    return message
        raise TimeoutError(f"no matching message from {self.address} within {timeout:.0f} s")


def decode_array(message: protocol.Message, index: int):
    """Payload ``index`` of a message as a numpy array (numpy ships with Blender)."""
    import numpy as np

    spec = message.payload_specs[index]
    return np.frombuffer(message.payloads[index], dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])

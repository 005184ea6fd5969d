"""The backend service: a ZeroMQ ROUTER that takes jobs from any number of Blender instances and streams their
events back.

The socket lives in one thread (the loop below); jobs run one at a time in the JobQueue's worker thread and hand
their events over through a thread-safe queue. Every malformed message gets an ``error`` reply and the loop goes
on. Messages are defined in blender_addon/protocol.py.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import zmq

from backend import __version__
from backend.errors import UserError
from backend.events import Done, Failed, MeshUpdate, Progress, Queued, Views
from backend.service.auth import CurveKeys, is_loopback, secure_socket
from backend.service.job_kinds import JobRunner, validate_settings
from backend.service.jobs import FINISHED, JobQueue, JobStore
from backend.service.messages import event_frames
from blender_addon import protocol

log = logging.getLogger("iso3d.server")


def describe_device(model) -> tuple[str, int | None]:
    device = model.device
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return f"{torch.cuda.get_device_name(device)} ({device})", int(free)
    return str(device), None


class BackendServer:
    def __init__(self, model, data_dir: str | Path, bind: str = "tcp://127.0.0.1:5555", keys: CurveKeys | None = None,
                 max_gpu_memory: float = 0.0):
        if not is_loopback(bind) and keys is None:
            self.refuse_unauthenticated(bind)
        self.model = model
        self.bind_address = bind
        self.store = JobStore(data_dir)
        self.events: queue.Queue = queue.Queue()
        self.subscribers: dict[str, set[bytes]] = {}
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.authenticator = secure_socket(self.context, self.socket, keys) if keys is not None else None
        try:
            self.socket.bind(bind)
        except zmq.ZMQError as error:
            self.close()
            raise UserError(f"cannot bind {bind}: {error}") from None
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.queue = JobQueue(self.store, JobRunner(model, self.store, max_gpu_memory), self._publish)
        self.stop_requested = threading.Event()

    @staticmethod
    def refuse_unauthenticated(bind: str):
        raise UserError(
            f"binding {bind} would expose the backend beyond this machine: give CURVE keys "
            "(--curve-secret-key and --curve-allowed-clients; `iso3d keys DIR` makes them) or bind to 127.0.0.1"
        )

    # -- from the worker thread -------------------------------------------------------------------------------
    def _publish(self, job_id: str, event) -> None:
        self.events.put((job_id, event))

    # -- the loop -------------------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self.queue.start()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        try:
            while not self.stop_requested.is_set():
                if poller.poll(20):
                    for _ in range(256):  # drain what is waiting, bounded so events still flow
                        try:
                            frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        self._handle(frames)
                self._forward_events()
        finally:
            self.queue.stop()
            self._forward_events()
            self.close()

    def close(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        self.socket.close(0)
        self.context.term()

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            log.warning("could not send to a client (gone or too slow); it can re-attach")

    def _forward_events(self) -> None:
        while True:
            try:
                job_id, event = self.events.get_nowait()
            except queue.Empty:
                return
            subscribers = self.subscribers.get(job_id, set())
            if isinstance(event, Queued):  # a queued job has no progress of its own yet: report its place
                record = self.store.records[job_id]
                frames = event_frames(job_id, Progress("queued", 0, record.total or 0, 0.0), position=event.position)
            else:
                frames = event_frames(job_id, event)
            for identity in subscribers:
                self._send(identity, frames)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return  # not a DEALER message; nothing to answer to
        identity, frames = frames[0], frames[1:]
        try:
            message = protocol.decode(frames, "client")
        except protocol.ProtocolError as error:
            self._send(identity, protocol.error_frames(error.code, str(error)))
            return
        handler = getattr(self, f"_on_{message.type}")
        try:
            handler(identity, message)
        except UserError as error:
            self._send(identity, protocol.error_frames("bad_settings", str(error), message.get("job")))

    # -- message handlers ---------------------------------------------------------------------------------------
    def _on_hello(self, identity: bytes, message) -> None:
        device, free = describe_device(self.model)
        fields = dict(server=f"iso3d {__version__}", model=self.model.name, device=device, trained=self.model.trained)
        if free is not None:
            fields["free_memory"] = free
        fields["jobs"] = [r.summary() for r in self.store.records.values()][-50:]
        self._send(identity, protocol.encode("welcome", **fields))

    def _on_ping(self, identity: bytes, message) -> None:
        fields = {"token": message.get("token")} if message.get("token") is not None else {}
        self._send(identity, protocol.encode("pong", **fields))

    def _on_list(self, identity: bytes, message) -> None:
        jobs = [r.summary() for r in sorted(self.store.records.values(), key=lambda r: r.created)][-200:]
        self._send(identity, protocol.encode("jobs", jobs=jobs))

    def _on_submit(self, identity: bytes, message) -> None:
        kind, settings = message.get("kind"), message.get("settings")
        validate_settings(kind, settings)
        from backend.imaging import decode_image

        image_png = message.payloads[0] if message.payloads else None  # a finish job has none
        if image_png is not None:
            decode_image(image_png, "the submitted image")  # refuse a bad image now, not in the queue
        record = self.store.create(kind, settings, image_png, message.get("name", ""))
        try:
            position = self.queue.submit(record)
        except OverflowError as error:
            record.status, record.error_code, record.error_message = "failed", "queue_full", str(error)
            self.store.save(record)
            self._send(identity, protocol.error_frames("queue_full", str(error), record.id))
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        fields = dict(job=record.id, kind=kind, position=position)
        if message.get("request") is not None:
            fields["request"] = message.get("request")
        self._send(identity, protocol.encode("accepted", **fields))

    def _known_job(self, identity: bytes, job_id: str):
        record = self.store.records.get(job_id)
        if record is None:
            self._send(identity, protocol.error_frames("unknown_job", f"no job {job_id[:40]!r} on this backend", None))
        return record

    def _on_cancel(self, identity: bytes, message) -> None:
        record = self._known_job(identity, message.get("job"))
        if record is None:
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        if record.status in FINISHED or not self.queue.cancel(record.id):
            self._send(
                identity,
                protocol.error_frames("not_running", f"job {record.id} is already {record.status}", record.id),
            )

    def _on_attach(self, identity: bytes, message) -> None:
        record = self._known_job(identity, message.get("job"))
        if record is None:
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        position = self.queue.position(record.id)
        self._send(identity, protocol.encode("accepted", job=record.id, kind=record.kind, position=max(position, 0)))
        for event in self.store.replay(record):
            if isinstance(event, (Progress, Views, MeshUpdate, Done, Failed)):
                self._send(identity, event_frames(record.id, event))

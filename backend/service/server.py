"""The backend service: a ZeroMQ ROUTER that takes jobs from any number of Blender instances and streams their
events back.

The socket lives in one thread (the loop below), which only moves bytes and small headers: input images are
decoded and downscaled by a worker thread, jobs run one at a time in the JobQueue's worker thread, and both hand
their results back through a thread-safe queue, waking the loop as they do (a byte on a local socket pair that the
loop polls beside the ZeroMQ socket), so that what they hand back goes out at once, not at the loop's next idle
timeout. No message can end the loop: each one is handled inside a catch-all that answers ``error`` (``internal``
with a short id; the traceback goes to the log). Messages are defined in blender_addon/core/protocol.py; what each
one is answered is ``client_requests``'s (a mixin of ``BackendServer``), the jobs' records are ``job_store``'s and
their queue ``job_queue``'s.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from backend.errors import UserError
from backend.events import Done, Failed, Progress, Queued
from backend.service import retention
from backend.service.auth import CurveKeys, is_loopback, secure_socket
from backend.service.client_requests import ClientRequests
from backend.service.data_lock import DataFolderLock
from backend.service.job_kinds import JobRunner, describe_job_settings
from backend.service.job_queue import JobQueue
from backend.service.job_store import JobStore
from backend.service.messages import event_frames
from backend.service.options import ServiceOptions
from backend.service.warmup import Warmup
from blender_addon.core import protocol
from blender_addon.core.addresses import DEFAULT_ADDRESS

log = logging.getLogger("iso3d.server")
IDLE_POLL_MS = 20  # how long the loop waits for a message or a wake-up before it checks for a stop request again


class BackendServer(ClientRequests):
    def __init__(self, model, data_dir: str | Path, bind: str = DEFAULT_ADDRESS, keys: CurveKeys | None = None,
                 options: ServiceOptions | None = None, admin_key: str | None = None,
                 lock: DataFolderLock | None = None, warmup: bool = False,
                 warmup_generate_settings: dict | None = None):
        self.loopback = is_loopback(bind)
        if not self.loopback and keys is None:
            self.refuse_unauthenticated(bind)
        self.options = options or ServiceOptions()
        self.options.validate()
        self.model = model
        self.bind_address = bind
        self.data_dir = Path(data_dir)
        self.lock = lock or DataFolderLock(self.data_dir)  # before anything in the folder is read or written
        try:
            self.store = JobStore(self.data_dir, model_name=model.name)
            retention.prune(self.store, self.options.keep_days, self.options.max_data_gb)
        except BaseException:
            self.lock.release()
            raise
        self.curve = keys is not None
        self.admin_key = admin_key
        self.events: queue.Queue = queue.Queue()  # from the worker threads to the loop: put with _hand_to_loop
        # a byte on wake_sender wakes the loop (it polls wake_receiver); both ends never block
        self.wake_receiver, self.wake_sender = socket.socketpair()
        self.wake_receiver.setblocking(False)
        self.wake_sender.setblocking(False)
        self.idle_poll_ms = IDLE_POLL_MS
        self.subscribers: dict[str, set[bytes]] = {}
        self.inputs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iso3d-inputs")
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # per frame: larger frames up to this are answered ``too_large`` by decode; beyond it ZeroMQ drops the peer
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.authenticator = None
        try:
            self.authenticator = secure_socket(self.context, self.socket, keys) if keys is not None else None
            self.socket.bind(bind)
        except zmq.ZMQError as error:
            self.close()
            raise UserError(f"cannot bind {bind}: {error}") from None
        except BaseException:
            self.close()
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.runner = JobRunner(model, self.store, self.options.max_gpu_memory)
        self.warmup = Warmup(model, warmup, warmup_generate_settings, self.options.max_gpu_memory)
        self.queue = JobQueue(self.store, self.runner, self._publish, self.options.max_crashes, self.options.max_queued,
                              prelude=lambda: self.warmup.run(self._publish_warmup))
        self.stop_requested = threading.Event()
        self.job_settings = describe_job_settings()

    @staticmethod
    def refuse_unauthenticated(bind: str):
        raise UserError(
            f"binding {bind} would expose the backend beyond this machine: give CURVE keys "
            "(--curve-secret-key and --curve-allowed-clients; `iso3d keys DIR` makes them) or bind to 127.0.0.1"
        )

    # -- from the worker threads --------------------------------------------------------------------------------
    def _hand_to_loop(self, item: tuple) -> None:
        """Queue ``item`` for the loop and wake it (from any thread)."""
        self.events.put(item)
        try:
            self.wake_sender.send(b"\0")
        except OSError:  # full (the loop has wake-ups waiting, so it wakes anyway) or closed (stopping)
            pass

    def _publish(self, job_id: str, event) -> None:
        self._hand_to_loop(("event", job_id, event))

    def _publish_warmup(self, phase: str, step: int, total: int, elapsed: float) -> None:
        """Warm-up progress to the clients of the jobs waiting behind it."""
        for job_id in list(self.queue.pending):
            self._publish(job_id, Progress(phase, step, total, elapsed))

    # -- the loop -------------------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self.queue.start()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.wake_receiver, zmq.POLLIN)
        try:
            while not self.stop_requested.is_set():
                ready = dict(poller.poll(self.idle_poll_ms))
                if self.wake_receiver.fileno() in ready:
                    self._drain_wake_ups()
                if self.socket in ready:
                    for _ in range(256):  # drain what is waiting, bounded so events still flow
                        try:
                            frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(frames)
                self._forward_events()
        finally:
            self.queue.stop(self.options.stop_timeout)
            self._forward_events()
            self.close()

    def _drain_wake_ups(self) -> None:
        try:
            while self.wake_receiver.recv(4096):
                pass
        except OSError:  # nothing more waiting (BlockingIOError)
            pass

    def close(self) -> None:
        self.inputs.shutdown(wait=False, cancel_futures=True)
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        self.socket.close(0)
        self.context.term()
        self.wake_sender.close()
        self.wake_receiver.close()
        self.lock.release()

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            log.warning("could not send to a client (gone or too slow); it can re-attach")

    def _error(self, identity: bytes, code: str, message: str, job: str | None = None) -> None:
        self._send(identity, protocol.error_frames(code, self.redact(message), job))

    def redact(self, text: str) -> str:
        """``text`` without the server's absolute paths (the data folder is named ``<data>``)."""
        for root in {str(self.data_dir.resolve()), str(self.data_dir.absolute())}:
            text = text.replace(root, "<data>")
        return text

    def _forward_events(self) -> None:
        for _ in range(1000):  # bounded, so that the socket is polled again soon
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            try:
                if item[0] == "input":
                    self._accept(*item[1:])
                else:
                    self._forward(*item[1:])
            except Exception:  # nothing may end the loop; the log has the traceback
                log.exception("internal error forwarding %s", item[0])

    def _forward(self, job_id: str, event) -> None:
        subscribers = self.subscribers.get(job_id, set())
        record = self.store.records.get(job_id)
        if isinstance(event, Queued):  # a queued job has no progress of its own yet: report its place
            total = record.total if record is not None else 0
            frames = event_frames(job_id, Progress("queued", 0, total or 0, 0.0), position=event.position)
        elif isinstance(event, Failed):
            frames = protocol.error_frames(event.code, self.redact(event.message), job_id)
        elif isinstance(event, Done):
            frames = self._done_frames(job_id)
        else:
            frames = event_frames(job_id, event)
        for identity in subscribers:
            self._send(identity, frames)
        if isinstance(event, (Done, Failed)):
            self.runner.model_inputs.pop(job_id, None)  # a job cancelled while it waited never took its input
            retention.prune(self.store, self.options.keep_days, self.options.max_data_gb)

    def _done_frames(self, job_id: str) -> list[bytes]:
        """``done`` with the artifacts by name and size (and their paths for a client on this machine)."""
        record = self.store.records[job_id]
        artifacts = []
        for name in sorted(record.artifacts):
            try:
                path = self.store.artifact_path(record, name)
            except KeyError:
                continue
            entry = {"name": name, "size": path.stat().st_size}
            if self.loopback:
                entry["path"] = str(path)
            artifacts.append(entry)
        note = {"note": record.note} if record.note else {}
        return protocol.encode("done", job=job_id, artifacts=artifacts, **note)

    def _handle(self, frames) -> None:
        if len(frames) < 2:
            return  # not a DEALER message; nothing to answer to
        identity = frames[0].bytes
        client_key = self._client_key(frames[-1])
        message_type = None
        try:
            message = protocol.decode([frame.bytes for frame in frames[1:]], "client")
            message_type = message.type
            getattr(self, f"_on_{message.type}")(identity, message, client_key)
        except protocol.ProtocolError as error:
            self._error(identity, error.code, str(error))
        except UserError as error:
            job = message.get("job") if message_type in ("cancel", "attach", "fetch", "resume") else None
            self._error(identity, "bad_settings", str(error), job if isinstance(job, str) else None)
        except Exception:  # nothing may end the loop; the log has the traceback
            incident = uuid.uuid4().hex[:8]
            log.exception("internal error %s handling a %r message", incident, message_type)
            self._error(identity, "internal", f"internal error {incident} (the backend's log has the details)")

    def _client_key(self, frame) -> str:
        """The Z85 public key of the sender with CURVE (set by the authenticator), else ""."""
        if not self.curve:
            return ""
        try:
            return frame.get("User-Id") or ""
        except (zmq.ZMQError, AttributeError):
            return ""

    def _may_use(self, record, client_key: str) -> bool:
        """With CURVE, a job belongs to the key that submitted it; the admin key may use every job."""
        if not self.curve:
            return True
        return record is not None and (record.owner == client_key or (self.admin_key and client_key == self.admin_key))

    def _visible(self, client_key: str):
        admin = not self.curve or (self.admin_key and client_key == self.admin_key)
        return lambda record: admin if record is None else self._may_use(record, client_key)

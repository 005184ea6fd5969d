"""The backend service: a ZeroMQ ROUTER that takes jobs from any number of Blender instances and streams their
events back.

The socket lives in one thread (the loop below), which only moves bytes and small headers: input images are
decoded and downscaled by a worker thread, jobs run one at a time in the JobQueue's worker thread, and both hand
their results back through a thread-safe queue. No message can end the loop: each one is handled inside a
catch-all that answers ``error`` (``internal`` with a short id; the traceback goes to the log). Messages are
defined in blender_addon/core/protocol.py.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from backend import __version__
from backend.errors import UserError
from backend.events import Done, Failed, MeshUpdate, Progress, Queued, Views
from backend.service import retention
from backend.service.auth import CurveKeys, is_loopback, secure_socket
from backend.service.data_lock import DataFolderLock
from backend.service.inputs import check_input_header, prepare_input
from backend.service.job_kinds import JobRunner, describe_job_settings, validate_settings
from backend.service.jobs import FINISHED, JobQueue, JobStore
from backend.service.messages import event_frames
from backend.service.options import ServiceOptions, sanitize_name
from backend.service.resuming import resume_refusal
from backend.service.warmup import Warmup
from backend.settings import settings_from_dict
from blender_addon.core import protocol
from blender_addon.core.addresses import DEFAULT_ADDRESS

log = logging.getLogger("iso3d.server")
REPLAY_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)  # a damaged stored file (np.load)


def describe_device(model) -> tuple[str, int | None]:
    device = model.device
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return f"{torch.cuda.get_device_name(device)} ({device})", int(free)
    return str(device), None


class BackendServer:
    def __init__(self, model, data_dir: str | Path, bind: str = DEFAULT_ADDRESS, keys: CurveKeys | None = None,
                 options: ServiceOptions | None = None, admin_key: str | None = None,
                 lock: DataFolderLock | None = None, warmup: bool = False):
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
        self.events: queue.Queue = queue.Queue()
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
        runner = JobRunner(model, self.store, self.options.max_gpu_memory)
        self.warmup = Warmup(model, warmup)
        self.queue = JobQueue(self.store, runner, self._publish, self.options.max_crashes, self.options.max_queued,
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
    def _publish(self, job_id: str, event) -> None:
        self.events.put(("event", job_id, event))

    def _publish_warmup(self, step: int, total: int, elapsed: float) -> None:
        """Warm-up progress to the clients of the jobs waiting behind it."""
        for job_id in list(self.queue.pending):
            self._publish(job_id, Progress("warmup", step, total, elapsed))

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
                            frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(frames)
                self._forward_events()
        finally:
            self.queue.stop(self.options.stop_timeout)
            self._forward_events()
            self.close()

    def close(self) -> None:
        self.inputs.shutdown(wait=False, cancel_futures=True)
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        self.socket.close(0)
        self.context.term()
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
        return protocol.encode("done", job=job_id, artifacts=artifacts)

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

    # -- message handlers ---------------------------------------------------------------------------------------
    def _on_hello(self, identity: bytes, message, client_key: str) -> None:
        device, free = describe_device(self.model)
        fields = dict(server=f"iso3d {__version__}", model=self.model.name, device=device, trained=self.model.trained,
                      warmup=self.warmup.state)
        if free is not None:
            fields["free_memory"] = free
        fields["settings"] = self.job_settings
        self._send(identity, self._encode_with_recent_jobs("welcome", client_key, 50, **fields))

    def _on_ping(self, identity: bytes, message, client_key: str) -> None:
        fields = {"token": message.get("token")} if message.get("token") is not None else {}
        self._send(identity, protocol.encode("pong", **fields))

    def _on_prune(self, identity: bytes, message, client_key: str) -> None:
        """The retention policy now, with the message's limits (or the server's); for the admin key with CURVE,
        for any (local) client without."""
        if self.curve and not (self.admin_key and client_key == self.admin_key):
            self._error(identity, "not_allowed", "only the admin key may prune")
            return
        given = {key: message.get(key) for key in ("keep_days", "max_data_gb") if message.get(key) is not None}
        limits = settings_from_dict(self.options, given)
        if limits.keep_days is None and limits.max_data_gb is None:
            raise UserError("prune needs keep_days and/or max_data_gb (the server has neither)")
        retention.prune(self.store, limits.keep_days, limits.max_data_gb)
        self._on_list(identity, message, client_key)

    def _on_list(self, identity: bytes, message, client_key: str) -> None:
        self._send(identity, self._encode_with_recent_jobs("jobs", client_key, 200))

    def _encode_with_recent_jobs(self, kind: str, client_key: str, most: int, **fields) -> list[bytes]:
        """``kind`` with the client's most recent jobs (at most ``most``): as many as fit in one header."""
        jobs = self.store.summaries(self._visible(client_key))[-most:]
        while True:
            try:
                return protocol.encode(kind, **fields, jobs=jobs)
            except protocol.ProtocolError:
                if not jobs:
                    raise
                jobs = jobs[len(jobs) // 2 + 1:] if len(jobs) > 1 else []

    def _refuse_new_job(self) -> str | None:
        """Why no new job can be taken now (queue or disk), or None."""
        if not self.queue.has_room():
            return "queue_full"
        if retention.free_bytes(self.store.root) < self.options.min_free_gb * retention.GB:
            return "disk_full"
        return None

    def _refusal(self, identity: bytes, code: str, job: str | None = None) -> None:
        texts = {"queue_full": "the queue is full; try again later",
                 "disk_full": "the backend's disk is nearly full; delete or prune finished jobs (iso3d serve --prune)"}
        self._error(identity, code, texts[code], job)

    def _on_submit(self, identity: bytes, message, client_key: str) -> None:
        kind, settings = message.get("kind"), message.get("settings")
        parsed = validate_settings(kind, settings)
        if kind == "finish":
            source = self.store.records.get(parsed[0])
            if source is None or not self._may_use(source, client_key):
                raise UserError(f"finish: no job {parsed[0][:40]!r} on this backend")
        refusal = self._refuse_new_job()
        if refusal:
            self._refusal(identity, refusal)
            return
        name = sanitize_name(message.get("name", ""))
        request = message.get("request")
        if not message.payloads:  # a finish job has no image
            self._accept(identity, kind, settings, name, request, client_key, None)
            return
        png = message.payloads[0]
        try:
            check_input_header(png, self.options.max_input_pixels)
        except UserError as error:
            self._error(identity, "too_large", str(error))
            return
        side = self.options.stored_input_side

        def prepare() -> None:  # in the input worker: decode, check, downscale
            try:
                result = prepare_input(png, side)
            except UserError as error:
                result = error
            except Exception as error:  # handed back to the loop, which answers it
                log.exception("preparing an input image failed")
                result = error
            self.events.put(("input", identity, kind, settings, name, request, client_key, result))

        self.inputs.submit(prepare)

    def _accept(self, identity: bytes, kind: str, settings: dict, name: str, request, client_key: str, image) -> None:
        """Create and queue the job once its input is ready (in the loop); refused jobs leave nothing behind."""
        if isinstance(image, UserError):
            self._error(identity, "bad_input", str(image))
            return
        if isinstance(image, Exception):
            incident = uuid.uuid4().hex[:8]
            log.error("internal error %s: %r", incident, image)
            self._error(identity, "internal", f"internal error {incident} (the backend's log has the details)")
            return
        refusal = self._refuse_new_job()
        if refusal:
            self._refusal(identity, refusal)
            return
        record = self.store.create(kind, settings, image, name, owner=client_key)
        try:
            position = self.queue.submit(record)
        except OverflowError:
            self.store.delete(record.id)
            self._refusal(identity, "queue_full")
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        fields = dict(job=record.id, kind=kind, position=position)
        if request is not None:
            fields["request"] = request
        self._send(identity, protocol.encode("accepted", **fields))

    def _known_job(self, identity: bytes, job_id: str, client_key: str):
        record = self.store.records.get(job_id)
        if record is None and job_id in self.store.damaged:
            self._error(identity, "damaged", f"job {job_id} is damaged: {self.store.damaged[job_id][0]}", job_id)
            return None
        if record is None or not self._may_use(record, client_key):
            self._error(identity, "unknown_job", f"no job {job_id[:40]!r} on this backend")
            return None
        return record

    def _on_cancel(self, identity: bytes, message, client_key: str) -> None:
        record = self._known_job(identity, message.get("job"), client_key)
        if record is None:
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        if record.status in FINISHED or not self.queue.cancel(record.id):
            self._error(identity, "not_running", f"job {record.id} is already {record.status}", record.id)

    def _on_resume(self, identity: bytes, message, client_key: str) -> None:
        """A cancelled generate job back into the queue: same id and folder, on from its saved step; the sender
        follows it (``accepted``, then its events, as after a submit), and so does every client attached to it."""
        self._forward_events()  # a job that has just stopped: its end goes out (and is pruned) before it runs again
        record = self._known_job(identity, message.get("job"), client_key)
        if record is None:
            return
        refusal = resume_refusal(self.store, record)
        if refusal is not None:
            self._error(identity, *refusal, record.id)
            return
        refusal = self._refuse_new_job()
        if refusal:
            self._refusal(identity, refusal, record.id)
            return
        try:
            position = self.queue.resume(record)
        except OverflowError:
            self._refusal(identity, "queue_full", record.id)
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        fields = dict(job=record.id, kind=record.kind, position=position)
        if message.get("request") is not None:
            fields["request"] = message.get("request")
        self._send(identity, protocol.encode("accepted", **fields))

    def _on_attach(self, identity: bytes, message, client_key: str) -> None:
        record = self._known_job(identity, message.get("job"), client_key)
        if record is None:
            return
        try:  # read everything first: a damaged file answers an error, not half a replay
            events = list(self.store.replay(record))
        except REPLAY_ERRORS as error:
            reason = f"a stored file cannot be read ({type(error).__name__})"
            log.warning("job %s: %s: %s", record.id, reason, error)
            self._error(identity, "damaged", f"job {record.id} is damaged: {reason}", record.id)
            return
        self.subscribers.setdefault(record.id, set()).add(identity)
        position = self.queue.position(record.id)
        self._send(identity, protocol.encode("accepted", job=record.id, kind=record.kind, position=max(position, 0)))
        for event in events:
            if isinstance(event, Done):
                self._send(identity, self._done_frames(record.id))
            elif isinstance(event, Failed):
                self._error(identity, event.code, event.message, record.id)
            elif isinstance(event, (Progress, Views, MeshUpdate)):
                self._send(identity, event_frames(record.id, event))

    def _on_fetch(self, identity: bytes, message, client_key: str) -> None:
        """One chunk of a job's artifact, by name, from ``offset``."""
        record = self._known_job(identity, message.get("job"), client_key)
        if record is None:
            return
        name, offset = message.get("name"), message.get("offset", 0)
        try:
            path = self.store.artifact_path(record, name)
        except KeyError:
            self._error(identity, "unknown_file", f"job {record.id} has no file {name[:80]!r}", record.id)
            return
        size = path.stat().st_size
        if not 0 <= offset <= size:
            self._error(identity, "bad_offset", f"offset {offset} is outside the file's {size} bytes", record.id)
            return
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(protocol.FETCH_CHUNK_BYTES)
        fields = dict(job=record.id, name=name, offset=offset, size=size, final=offset + len(data) >= size)
        if message.get("request") is not None:
            fields["request"] = message.get("request")
        self._send(identity, protocol.encode("chunk", [({"kind": "bytes"}, data)], **fields))

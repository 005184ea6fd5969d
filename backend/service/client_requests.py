"""What the service answers to each client message (``hello``, ``ping``, ``list``, ``prune``, ``submit``, ``cancel``,
``resume``, ``attach``, ``fetch``), a mixin of ``server.BackendServer``: its ``_handle`` calls ``_on_<type>``.

The handlers run in the socket loop and must not wait: an input image is prepared by the input worker, which hands it
back to the loop (``_accept``). With CURVE, a client sees and uses only its own jobs (``_may_use``); the admin key all.
"""

from __future__ import annotations

import logging
import uuid
import zipfile

from backend import __version__
from backend.errors import UserError
from backend.events import Done, Failed, MeshUpdate, Progress, Views
from backend.service import retention
from backend.service.inputs import check_input_header, prepare_input
from backend.service.job_kinds import model_input, validate_settings
from backend.service.job_store import FINISHED
from backend.service.messages import event_frames
from backend.service.options import sanitize_name
from backend.service.resuming import resume_refusal
from backend.settings import settings_from_dict
from blender_addon.core import protocol

log = logging.getLogger("iso3d.server")
REPLAY_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)  # a damaged stored file (np.load)


def describe_device(model) -> tuple[str, int | None]:
    device = model.device
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return f"{torch.cuda.get_device_name(device)} ({device})", int(free)
    return str(device), None


class ClientRequests:
    """The ``_on_<type>`` handlers of ``BackendServer`` (a mixin: the state is the server's)."""

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

        def prepare() -> None:  # in the input worker: decode, check, downscale, and the job's model input
            try:
                stored = prepare_input(png, side)
                result = (stored.png, model_input(kind, stored.image))
            except UserError as error:
                result = error
            except Exception as error:  # handed back to the loop, which answers it
                log.exception("preparing an input image failed")
                result = error
            self._hand_to_loop(("input", identity, kind, settings, name, request, client_key, result))

        self.inputs.submit(prepare)

    def _accept(self, identity: bytes, kind: str, settings: dict, name: str, request, client_key: str, image) -> None:
        """Create and queue the job once its input is ready (in the loop); refused jobs leave nothing behind.
        ``image``: (the PNG to store, the job's model input), None for a finish job, or the error preparing it."""
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
        png, prepared = image if image is not None else (None, None)
        record = self.store.create(kind, settings, png, name, owner=client_key)
        if prepared is not None:
            self.runner.model_inputs[record.id] = prepared  # before it is queued: the job thread takes it
        try:
            position = self.queue.submit(record)
        except OverflowError:
            self.runner.model_inputs.pop(record.id, None)
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

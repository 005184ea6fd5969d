"""The service's job queue: one GPU job at a time in a worker thread, cancellation, and the re-run of what a
previous run of the service left unfinished (records and files: ``job_store``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from backend.events import Done, Event, Failed, MeshUpdate, Progress, Queued, Views
from backend.service.job_store import JobRecord, JobStore

log = logging.getLogger("iso3d.server")


# results sent before they are stored (a finished job's Done is sent after everything it names is stored)
STREAMED_FIRST = (Views, MeshUpdate)
JobFunction = Callable[[JobRecord, Path, threading.Event, bool], Iterator[Event]]


class JobQueue:
    """Runs one job at a time in a worker thread. ``publish(job_id, event)`` is called from that thread for
    every event (the server forwards them to subscribed clients); ``run_job(record, directory, cancel, resume)``
    yields the job's events, checks ``cancel`` between steps and then ends with ``Failed('cancelled', ...)``."""

    def __init__(self, store: JobStore, run_job: JobFunction, publish: Callable[[str, Event], None],
                 max_crashes: int = 3, max_queued: int = 64, prelude: Callable[[], None] | None = None):
        self.store = store
        self.prelude = prelude  # run in the worker before the first job (the warm-up); jobs wait behind it
        self.max_crashes = max_crashes
        self.max_queued = max_queued
        self.run_job = run_job
        self.publish = publish
        self.pending: deque[str] = deque()
        self.running: str | None = None
        self.cancel_flags: dict[str, threading.Event] = {}
        self.lock = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._work, name="iso3d-jobs", daemon=True)

    def start(self) -> None:
        for record in self.store.unfinished():  # resume what a previous run of the service left unfinished
            if record.crashes >= self.max_crashes:
                self.store.record_event(record, Failed("crashed", f"failed: crashed {record.crashes} times"))
                continue
            self.store.save(record)
            self.pending.append(record.id)
            self.cancel_flags[record.id] = threading.Event()
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self.lock:
            self.stopping = True
            for flag in self.cancel_flags.values():
                flag.set()  # interrupt the running job; it is resumed on the next start
            self.lock.notify_all()
        self.thread.join(timeout)
        # what _free_memory froze is collectable again: a process that stops one service and starts another (tests,
        # benches) does not keep the first one's cycles for good
        gc.unfreeze()

    def resume(self, record: JobRecord) -> int:
        """Put a stopped job (``resuming.resume_refusal`` is None) back into the queue with its id, folder and saved
        state; it runs on from its checkpoint. Returns its queue position; OverflowError when the queue is full."""
        with self.lock:
            if len(self.pending) >= self.max_queued:
                raise OverflowError(f"the queue is full ({self.max_queued} jobs waiting); try again later")
            record.status, record.error_code, record.error_message = "queued", "", ""
            record.crashes = 0  # resumed by a person: a fresh retry budget
            record.eta = None
            self.store.save(record)
            self.pending.append(record.id)
            self.cancel_flags[record.id] = threading.Event()
            self.lock.notify_all()
            return self.position(record.id)

    def has_room(self) -> bool:
        return len(self.pending) < self.max_queued

    def submit(self, record: JobRecord) -> int:
        with self.lock:
            if len(self.pending) >= self.max_queued:
                raise OverflowError(f"the queue is full ({self.max_queued} jobs waiting); try again later")
            self.pending.append(record.id)
            self.cancel_flags[record.id] = threading.Event()
            self.lock.notify_all()
            return self.position(record.id)

    def position(self, job_id: str) -> int:
        """0 while running, k for the k-th job waiting, -1 when neither."""
        if self.running == job_id:
            return 0
        try:
            return list(self.pending).index(job_id) + 1
        except ValueError:
            return -1

    def cancel(self, job_id: str) -> bool:
        """Stop a job within one step (running) or drop it from the queue. False if it is not active."""
        with self.lock:
            if job_id in self.pending:
                self.pending.remove(job_id)
                record = self.store.records[job_id]
                event = Failed("cancelled", "cancelled before it started")
                self.store.record_event(record, event)
                self.publish(job_id, event)
                return True
            if self.running == job_id:
                self.cancel_flags[job_id].set()
                return True
            return False

    def _work(self) -> None:
        if self.prelude is not None:
            self.prelude()
        self._free_memory()  # the first collect scans everything there is (the model, torch): before any job
        while True:
            with self.lock:
                while not self.pending and not self.stopping:
                    self.lock.wait()
                if self.stopping:
                    return
                job_id = self.pending.popleft()
                self.running = job_id
                for waiting in list(self.pending):  # everyone behind moved up one place
                    self.publish(waiting, Queued(self.position(waiting)))
            try:
                self._run(job_id)
            finally:
                with self.lock:
                    self.running = None
                    if job_id not in self.pending:  # resumed while it ended: the new run keeps its flag
                        self.cancel_flags.pop(job_id, None)
                self._free_memory()

    def _run(self, job_id: str) -> None:
        record = self.store.records[job_id]
        resume = record.runs > 0
        record.status, record.runs = "running", record.runs + 1
        self.store.save(record)
        cancel = self.cancel_flags[job_id]
        last_save = time.monotonic()
        try:
            for event in self.run_job(record, self.store.directory(job_id), cancel, resume):
                if self.stopping and cancel.is_set():
                    # the service is stopping: the job saves its state (a generate job its checkpoint) and ends
                    # cancelled; it stays unfinished so that a restart resumes it
                    if isinstance(event, Failed) and event.code == "cancelled":
                        record.status = "queued"
                        self.store.save(record)
                        return
                    if not isinstance(event, (Done, Failed)):
                        continue
                streamed = isinstance(event, STREAMED_FIRST)
                if streamed:
                    # off the path to the client: views and meshes go out first, then are stored (atomically,
                    # with an fsync each: 5-25 ms a mesh; a job that dies before this point has not stored them and
                    # runs again on restart)
                    self.publish(job_id, event)
                self.store.record_event(record, event)
                if isinstance(event, Progress) and time.monotonic() - last_save > 2.0:
                    self.store.save(record)
                    last_save = time.monotonic()
                if not streamed:
                    self.publish(job_id, event)
                if isinstance(event, (Done, Failed)):
                    return
            if record.status == "running":
                raise RuntimeError("the job ended without a result")
        except Exception as error:  # a job's bug must not take the service down
            incident = uuid.uuid4().hex[:8]
            log.exception("internal error %s in job %s", incident, job_id)
            event = Failed("internal", f"internal error {incident} (the backend's log has the details): "
                                       f"{type(error).__name__}: {str(error)[:300]}")
            self.store.record_event(record, event)
            self.publish(job_id, event)

    @staticmethod
    def _free_memory() -> None:
        """Collect the ended job's cyclic garbage (and its GPU memory), then freeze what survived. A full collection
        scans every object tracked: half a million with torch and the model loaded, 280-590 ms on the 2-core
        machine, all of it holding the GIL (the socket loop stalls too) and on the path of a job submitted right
        after. Frozen objects (the model, modules, the service's state) are left out of later collections, so the
        next one scans what was made since: the next job's garbage (~0 ms after a preview). ``stop`` unfreezes."""
        gc.collect()
        gc.freeze()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

"""Resuming a stopped job: which jobs can be resumed, and why another cannot (the ``resume`` message).

A generate job that is cancelled saves the checkpoint of the step it stopped at (backend/nerf/trainer.py) in its
work folder; ``resume`` puts the job back into the queue (``JobQueue.resume``) with the same id and folder, and it
runs on from that step. A preview or a finish keeps no state when stopped: it is submitted again instead.
"""

from __future__ import annotations

from backend.service.job_store import WORK_FOLDER, JobRecord, JobStore

RESUMABLE_KINDS = ("generate",)  # kinds that save their state when stopped
INTERRUPTED = "crashed"  # the error code of a job failed by interruptions (the service died under it too often)


def resume_refusal(store: JobStore, record: JobRecord) -> tuple[str, str] | None:
    """Why ``record`` cannot be resumed, as (error code, sentence), or None when it can: a cancelled (or
    failed-by-interruption) generate job of this model whose saved state is on disk."""
    stopped = record.status == "cancelled" or (record.status == "failed" and record.error_code == INTERRUPTED)
    if not stopped:
        return "not_resumable", f"job {record.id} is {record.status}; only a cancelled job can be resumed"
    if record.kind not in RESUMABLE_KINDS:
        return "not_resumable", (f"job {record.id} is a {record.kind} job, which keeps no state when stopped; only "
                                 f"generate jobs can be resumed (submit the {record.kind} again)")
    if store.needs_other_model(record):
        return "needs_model", (f"job {record.id} was made with the model {record.model!r}; restart the backend with "
                               "it to resume the job")
    from backend.nerf.trainer import CHECKPOINT_NAME

    if not (store.root / record.id / WORK_FOLDER / CHECKPOINT_NAME).is_file():
        return "not_resumable", (f"job {record.id} has no saved state (it was cancelled before its first step); "
                                 "submit it again")
    return None

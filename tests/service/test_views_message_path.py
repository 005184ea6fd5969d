"""What lies on a job's path from submit to its views message, made cheaper without changing a pixel: the input
image decoded once (the job's model input, made by the input worker, is the one its stored file gives), the views'
PNGs encoded in parallel and lossless, in order, the socket loop woken by the threads that hand it work (not left
to its idle timeout), and the collection after a job kept to that job's garbage (what survives is frozen). Real
files, real PNGs, a real job queue; an in-process server on a real loopback socket."""

from __future__ import annotations

import gc
import io
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from backend.events import Done, Views
from backend.imaging import decode_image
from backend.service.inputs import prepare_input
from backend.service.job_kinds import model_input
from backend.service.job_queue import JobQueue
from backend.service.job_store import JobStore
from backend.service.messages import event_frames
from backend.service.server import IDLE_POLL_MS
from blender_addon.core import protocol
from tests.helpers.backend import EXAMPLE_PNG
from tests.helpers.waiting import wait_until

ANSWER_S, JOB_S = 60, 300  # a tiny-model backend on a loaded 2-core machine (tests/service/test_server.py)


def cut_out_png(width: int, height: int) -> bytes:
    """An RGBA cut-out whose transparent background carries colour, with a half-transparent part."""
    rng = np.random.default_rng(width * height)
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(width, height) / 3) ** 2
    rgba[disc] = (200, 60, 30, 255)
    rgba[disc & (xx > width / 2), 3] = 128
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["preview", "generate"])
@pytest.mark.parametrize("size", [(300, 200), (1500, 1100)], ids=["stored as sent", "stored downscaled"])
def test_the_model_input_made_at_submit_is_the_one_the_stored_file_gives(kind, size, tmp_path):
    png = cut_out_png(*size)
    stored = prepare_input(png, 1024)
    assert (stored.png == png) == (max(size) <= 1024)
    store = JobStore(tmp_path / "data")
    record = store.create(kind, {}, stored.png)
    from_file = decode_image(store.input_png(record.id))  # what a job run after a restart decodes
    assert from_file.size == stored.image.size == ((1024, 751) if max(size) > 1024 else size)
    handed_over = model_input(kind, stored.image)
    assert handed_over.shape == (1, 3, 256, 256)
    assert torch.equal(handed_over, model_input(kind, from_file))  # to the last bit: no tolerance


def test_a_finish_job_has_no_model_input():
    assert model_input("finish", decode_image(EXAMPLE_PNG)) is None


@pytest.mark.parametrize("count", [1, 4, 9])
def test_the_views_pngs_decode_to_the_views_pixels_in_order(count):
    rng = np.random.default_rng(count)
    images = rng.integers(0, 256, (count, 64, 48, 3), dtype=np.uint8)  # noise: every view differs
    images[0, :32] = 255  # and one half-white view, as a preview's background is
    views = Views("preview", images, [15.0] * count, [360.0 * i / count for i in range(count)],
                  np.repeat(np.eye(4, dtype=np.float32)[None], count, axis=0))
    message = protocol.decode(event_frames("job", views), "server")
    assert message.type == "views" and len(message.payloads) == count
    for index, png in enumerate(message.payloads):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), images[index]), index


@pytest.mark.integration
def test_a_preview_needs_no_idle_timeout_of_the_loop_and_no_second_decode(serve_in_process, connect):
    backend = serve_in_process()
    server = backend.server
    reads = []  # the job ids whose stored input.png was read
    input_png = server.store.input_png
    server.store.input_png = lambda job_id: reads.append(job_id) or input_png(job_id)
    # the loop now waits 10 minutes for a message before it looks at its queue of its own accord: the input worker's
    # result (-> accepted) and the job's events (-> progress, views, done) reach the client only if they wake it
    server.idle_poll_ms = 600_000
    client = connect(backend.address)
    try:
        client.submit("preview", EXAMPLE_PNG, {"steps": 2, "seed": 3})
        messages = []
        accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), ANSWER_S, messages)
        assert accepted.type == "accepted", accepted.fields
        job = accepted.get("job")
        client.wait_for(lambda m: m.type in ("done", "error") and m.get("job") == job, JOB_S, messages)
        assert [m.type for m in messages] == ["accepted", "progress", "progress", "views", "done"]
        assert reads == []  # the job ran on the model input the input worker made: input.png was not decoded again
        assert job not in server.runner.model_inputs  # taken by the job, nothing left behind
    finally:
        server.idle_poll_ms = IDLE_POLL_MS  # and a message wakes the loop, so that it sees the coming stop request
        client.ping("stop")
        client.wait_for(lambda m: m.type == "pong", ANSWER_S)


class Node:
    """A collector-tracked object."""


def test_a_jobs_cyclic_garbage_is_collected_after_it_and_what_survives_is_frozen(tmp_path):
    store = JobStore(tmp_path / "data")
    garbage = []  # a weak reference to the cycle each job made

    def job(record, directory, cancel, resume):
        node = Node()
        node.itself = node  # a cycle: only the collector frees it
        garbage.append(weakref.ref(node))
        yield Done()

    survivor = Node()  # alive before and after the job, like the model
    queue = JobQueue(store, job, lambda job_id, event: None)
    gc.disable()  # no automatic collection: only the queue's own collect after the job can free the cycle
    try:
        queue.start()
        record = store.create("preview", {}, None)
        queue.submit(record)
        wait_until(lambda: garbage and garbage[0]() is None, JOB_S, "the job's cycle to be collected")
        # frozen: gc.get_objects() lists the generations a collection scans, not the permanent one
        wait_until(lambda: not any(tracked is survivor for tracked in gc.get_objects()), JOB_S,
                   "the objects that survived the job to be frozen")
        assert record.status == "done"
    finally:
        queue.stop()
        gc.enable()
    assert gc.get_freeze_count() == 0  # a stopped queue leaves nothing frozen (the rest of the session as it was)

"""Service overhead of a warm preview: submit -> ``views`` message latency in `iso3d serve` against the bare preview call.

A BackendServer runs in a thread of this process on a real loopback ZeroMQ socket (warm-up on, as `iso3d serve` with a
compiled model), a BackendClient submits the same preview ``--repeats`` times once the warm-up is ready and one
preview has run, then the bare call (``run_preview`` to its ``Views`` event, same model, image and settings) as many
times after one more (the service idle by then; the two sides run apart, not interleaved: CUDA-graph trees are per
thread, ``service_latencies`` says why). The stages around the bare call are timed on their own (``stages_ms``), those
on the path to the ``views`` message first: the input worker's check, decode and model input (``prepare_input`` +
``model_input``; since 2026-12-03 the job takes that input instead of decoding the stored file), the job's record at
accept (``JobStore.create``: ``input.png`` and ``job.json``, atomic) and at its start (``job.json``), each progress
message's encoding and the views message's PNGs (``event_frames``; encoded in parallel since 2026-12-03); then what is
off that path: the stored file's decode (a job run after a restart), storing the views (``record_event``:
``views/latest.npz``) and the job's ``views.png`` grid (both after the views message is sent since 2026-12-02), and
the job queue's garbage collection after each job (on the path of a job submitted right after another, as here; since
2026-12-03 what survives a collection is frozen, so it scans only the newer objects), and the bare call right after
that collection and the CUDA cache given back (``JobQueue._free_memory``, as a job queued behind another starts)
against the bare call from a warm cache. ``--photo-side``: the side of
the square RGBA photo submitted (512, as the add-on sends; 1024, the largest the service stores). ``split_ms`` splits
both at the first denoising step (before it: queue, decode, CLIP, the first UNet call; after it: the other steps, VAE
decode, PNG encoding, sending). Every wait on the service has a deadline (``--answer-s``). Times are medians in
milliseconds.

    python bench/preview_service.py --tiny --device cpu       # this machine's check (tiny model)
    python bench/preview_service.py --compile cudagraphs      # CUDA, published sizes, random weights
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

from backend.diffusion.preview import PreviewSettings, run_preview
from backend.events import Progress, Views
from backend.imaging import decode_image, prepare_preview_image, save_views_grid
from backend.models.acceleration import accelerate_for_run
from backend.models.multiview_model import build_random_published_model, build_tiny_model
from backend.service.inputs import prepare_input
from backend.service.job_kinds import model_input
from backend.service.job_queue import JobQueue
from backend.service.job_store import JobStore
from backend.service.messages import event_frames
from backend.service.server import BackendServer
from blender_addon.core.client import BackendClient

ANSWER_S = 600  # a cold compile of the published UNet takes minutes


def synthetic_input_png(side: int = 512) -> bytes:
    """An RGBA object on a transparent background, the kind of image an artist submits."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    inside = (xx - side / 2) ** 2 + (yy - side / 2) ** 2 < (side / 3) ** 2
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    rgba[..., 3] = inside * 255
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def median_ms(fn, repeats: int, before=None) -> float:
    """Median of ``repeats`` timed calls of ``fn`` (``before()`` runs ahead of each, untimed)."""
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 2)


def bare_preview(model, image, settings, device, marks: dict | None = None) -> Views:
    """The preview's views; ``marks`` gets the perf_counter times of its first step and of its views."""
    for event in run_preview(model, image, settings):
        if marks is not None and isinstance(event, Progress) and event.step == 1:
            marks.setdefault("first_step", time.perf_counter())
        if isinstance(event, Views):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if marks is not None:
                marks["views"] = time.perf_counter()
            return event
    raise RuntimeError("the preview ended without views")


def wait_until_warm(client: BackendClient, answer_s: float = ANSWER_S):
    """The ``welcome`` that says the service's warm-up has ended (``ready``, ``off`` or ``failed``), asked for every
    half second; TimeoutError after ``answer_s`` seconds."""
    deadline = time.monotonic() + answer_s
    while True:
        client.hello()
        welcome = client.wait_for(lambda m: m.type == "welcome", max(0.1, deadline - time.monotonic()))
        if welcome.get("warmup") in ("ready", "off", "failed"):
            return welcome
        if time.monotonic() > deadline:
            raise TimeoutError(f"the warm-up was still {welcome.get('warmup')!r} after {answer_s:.0f} s")
        time.sleep(0.5)  # asking again; the deadline above bounds the loop


def service_latencies(server: BackendServer, png: bytes, settings: dict, repeats: int, bare,
                      answer_s: float = ANSWER_S) -> dict:
    """Medians of submit -> views and submit -> done over ``repeats`` service previews, then of ``repeats`` timed
    ``bare(marks)`` calls; each side runs one more call first, not counted. The two sides do not alternate:
    torch.compile's CUDA-graph trees are per thread (torch/_inductor/cudagraph_trees.py keeps its tree managers in a
    threading.local), the service's previews run in its job thread (``iso3d-jobs``, as in `iso3d serve`, where
    every GPU call runs in that thread) and the bare calls in the caller's, so alternating them could re-record or
    invalidate each other's graphs and charge that to either side. Run apart, each side's first call records (or
    finds) its own thread's graphs and the counted calls replay them. Split at the first denoising step: submit ->
    the first step's progress message (queue, image decode, CLIP and the first UNet call) and the first step ->
    views (the other steps, the VAE decode, the views' PNG encoding and sending), each against the same split of
    the bare call. ``uncounted_first_ms``: each side's first call, left out of the medians (what a preview right after
a generate job, or a thread's first call, pays). Every wait has a deadline of ``answer_s`` seconds (TimeoutError,
never a hang)."""
    client = BackendClient(server.endpoint.replace("0.0.0.0", "127.0.0.1"))
    try:
        welcome = wait_until_warm(client, answer_s)
        rows: dict[str, list[float]] = {key: [] for key in ("to_views", "to_done", "to_first_step", "first_step_to_views",
                                                            "bare", "bare_to_first_step", "bare_first_step_to_views")}
        first_calls: dict[str, float] = {}  # the calls not counted (after a generate job; this thread's first)
        for index in range(repeats + 1):  # the first one is not counted (the service's first preview here)
            marks: dict[str, float] = {}

            def arrived(message, wanted):
                if message.type == "progress" and message.get("phase") == "denoise" and message.get("step") == 1:
                    marks.setdefault("first_step", time.perf_counter())
                return message.type in wanted

            started = time.perf_counter()
            client.submit("preview", png, settings)
            views = client.wait_for(lambda m: arrived(m, ("views", "error")), answer_s)
            got_views = time.perf_counter()
            assert views.type == "views", views.fields
            client.wait_for(lambda m: m.type in ("done", "error"), answer_s)
            if not index:
                first_calls["submit_to_views"] = got_views - started
            else:
                first = marks.get("first_step", started)
                rows["to_views"].append(got_views - started)
                rows["to_done"].append(time.perf_counter() - started)
                rows["to_first_step"].append(first - started)
                rows["first_step_to_views"].append(got_views - first)
        for index in range(repeats + 1):  # the first one is not counted (this thread's first call of the model)
            bare_marks: dict[str, float] = {}
            started = time.perf_counter()
            bare(bare_marks)
            if not index:
                first_calls["bare"] = time.perf_counter() - started
            else:
                rows["bare"].append(time.perf_counter() - started)
                rows["bare_to_first_step"].append(bare_marks["first_step"] - started)
                rows["bare_first_step_to_views"].append(bare_marks["views"] - bare_marks["first_step"])
        ms = {key: round(statistics.median(values) * 1000, 2) for key, values in rows.items()}
        return {"warmup": welcome.get("warmup"), "warmup_s": server.warmup.seconds,
                "warmup_parts_s": dict(server.warmup.parts),
                "submit_to_views_ms": ms["to_views"], "submit_to_done_ms": ms["to_done"], "bare_preview_ms": ms["bare"],
                "split_ms": {"submit_to_first_step": ms["to_first_step"], "bare_to_first_step": ms["bare_to_first_step"],
                             "first_step_to_views": ms["first_step_to_views"],
                             "bare_first_step_to_views": ms["bare_first_step_to_views"]},
                "uncounted_first_ms": {key: round(value * 1000, 2) for key, value in first_calls.items()}}
    finally:
        client.close()


# --tiny: the service's generate warm-up at the 'tiny' preset's shapes (the default preset's 256^2 renders take
# minutes on a CPU)
TINY_WARMUP_GENERATE = {"preset": "tiny", "phases.resolution_before": 16, "phases.resolution_after": 16}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model (for a quick CPU check)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", default="off", choices=["off", "default", "cudagraphs"],
                        help="torch.compile the UNet as `iso3d serve --compile` does (cudagraphs: the service's "
                        "default on a GPU)")
    parser.add_argument("--photo-side", type=int, default=512,
                        help="side in pixels of the square RGBA photo submitted (default 512, the add-on's most; "
                        "the service stores up to 1024)")
    parser.add_argument("--light-warmup", action="store_true",
                        help="warm the service's generate part at the tiny preset's shapes, as --tiny does (the "
                        "preview is warmed as always): a cold published-size generate warm-up takes minutes and "
                        "does not touch the preview's path")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--answer-s", type=float, default=ANSWER_S,
                        help=f"deadline of every wait on the service, seconds (default {ANSWER_S})")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = build_tiny_model() if args.tiny else build_random_published_model(device=device)
    model.to(device=device, dtype=torch.float32 if device.type == "cpu" else torch.float16)
    accelerate_for_run(model, args.compile, device)  # as load_model_from_args does for `iso3d serve --compile ...`
    png = synthetic_input_png(args.photo_side)
    settings = PreviewSettings(steps=args.steps, seed=0)
    wire = {"steps": args.steps, "seed": 0}
    image = prepare_preview_image(prepare_input(png, 1024).image)
    info = {"model": model.name + (" tiny" if args.tiny else ""), "compile": args.compile, "steps": args.steps,
            "photo_side": args.photo_side, "light_warmup": args.light_warmup,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats}

    with tempfile.TemporaryDirectory() as data:
        import threading

        server = BackendServer(model, data, "tcp://127.0.0.1:*", warmup=True,
                               warmup_generate_settings=TINY_WARMUP_GENERATE if args.tiny or args.light_warmup else None)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            info.update(service_latencies(server, png, wire, args.repeats,
                                          lambda marks: bare_preview(model, image, settings, device, marks),
                                          args.answer_s))
        finally:
            server.stop_requested.set()
            thread.join(args.answer_s)
        views = bare_preview(model, image, settings, device)
        progress = Progress("denoise", 1, args.steps, 0.1, 5.0)
        store = JobStore(Path(data) / "stages")
        record = store.create("preview", wire, png)
        directory = store.directory(record.id)
        info["stages_ms"] = {
            "input_worker_check_decode_and_model_input": median_ms(
                lambda: model_input("preview", prepare_input(png, 1024).image), args.repeats),
            "job_record_at_accept (input.png, job.json)": median_ms(
                lambda: store.create("preview", wire, png), args.repeats),
            "job_record_at_start (job.json)": median_ms(lambda: store.save(record), args.repeats),
            "progress_message_encoding (each step)": median_ms(lambda: event_frames(record.id, progress), args.repeats),
            "views_message_png_encoding": median_ms(lambda: event_frames(record.id, views), args.repeats),
            "stored_input_decode_and_model_input (a run after a restart)": median_ms(
                lambda: model_input("preview", decode_image(store.input_png(record.id))), args.repeats),
            "store_views_npz (after sending)": median_ms(lambda: store.record_event(record, views), args.repeats),
            "views_grid_png (after sending)": median_ms(
                lambda: save_views_grid(views.images, directory / "views.png"), args.repeats),
            # as the queue after each job (JobQueue._free_memory: collect, then freeze); the service has stopped, which
            # unfroze everything, so its first call here scans the whole process again and the median the rest
            "collect_after_a_job (gc; before the next job)": median_ms(JobQueue._free_memory, max(3, args.repeats)),
            # what a job queued right behind another starts from: the queue's collection and, on CUDA, the caching
            # allocator's blocks given back to the driver (the preview's allocations outside CUDA graphs are made
            # again); against the same bare call from a warm cache, here
            "bare_preview (warm allocator)": median_ms(
                lambda: bare_preview(model, image, settings, device), args.repeats),
            "bare_preview_after_the_queue_frees_memory (gc, CUDA cache emptied)": median_ms(
                lambda: bare_preview(model, image, settings, device), args.repeats, before=JobQueue._free_memory),
        }
        gc.unfreeze()
    info["service_overhead_ms"] = round(info["submit_to_views_ms"] - info["bare_preview_ms"], 2)
    print(json.dumps(info, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return info


if __name__ == "__main__":
    main()

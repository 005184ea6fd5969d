"""A warm service's first intermediate mesh: a generate job's timeline from submit, and the warm preview's overhead.

The service is the one `iso3d serve` runs: a BackendServer with its warm-up (on when the model is compiled, as
`iso3d serve` decides), its model made by the same ``load_model_from_args`` (``--model random``: the published sizes
with random weights; ``--tiny``: the tiny model), on a real loopback ZeroMQ socket, and a BackendClient as the
add-on's. It runs in a thread of this process rather than as an `iso3d serve` child so that the bare preview, which
the preview overhead is measured against, runs the very same (compiled) model: a child process would need a second
model and a second cold compile (minutes on a GPU). Everything from the socket inward is the service's own code.

Once the warm-up has ended (``welcome``'s ``warmup`` is ready, off or failed) one generate job is submitted
(``--preset``, default ``fast``, with ``--set`` overrides; by default ``mesh.density_threshold=10``, as the
trajectory bench: random weights hold little density) and its messages are timed from submit: ``accepted``, the
first progress, every ``mesh`` (time, step, faces, vertices), every ``views``, and each mesh point (each multiple of
``run.mesh_every``): the time its mesh arrived, or, for an empty field (no mesh is sent), the time the progress
showed that none would (``faces`` 0: the progress of the step after the next mesh point, by which the trainer has
collected the background mesh). ``--until first-mesh`` cancels the job after its first mesh (or after
``--empty-mesh-points`` empty ones), ``--until done`` lets it finish. Then, on the same idle service, the warm
preview as bench/preview_service.py measures it (``--preview-repeats 0``: not). ``setup_ms``: the job's set-up parts
before its first step, in ms, from the service's log line (``first_step``: the first step itself; their sum
from the job's start, ``setup_outside_job_ms`` the rest of submit -> first progress). ``mesh_stages_ms``: the service's
work between the trainer's mesh and its message (storing ``mesh_latest.npz`` + ``job.json``, off that path since
2026-12-02, and encoding the message), on the first mesh. Every wait has a deadline (TimeoutError, never a hang).
Times from submit are seconds. The bare preview runs in this process's main thread, the service's jobs in its job
thread: CUDA graph trees are per thread, so the service's previews all run first, then the bare calls, each side's
first call not counted (bench/preview_service.service_latencies).

    python bench/service_generate.py --tiny --device cpu          # this machine's check (about a minute)
    python bench/service_generate.py --answer-s 420 --set mesh.density_threshold=2 \
        --json $OUT/service_generate_h200_$(date +%F).json        # CUDA, random weights (~5-6 min, cold caches)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from backend.commands.model_options import load_model_from_args
from backend.diffusion.preview import PreviewSettings
from backend.events import MeshUpdate
from backend.imaging import prepare_preview_image
from backend.service.inputs import prepare_input
from backend.service.job_kinds import generate_config
from backend.service.messages import event_frames
from backend.service.server import BackendServer
from bench.preview_service import (TINY_WARMUP_GENERATE, bare_preview, median_ms, service_latencies,
                                   synthetic_input_png, wait_until_warm)
from bench.source import source_commit
from blender_addon.core.client import BackendClient, decode_array

ANSWER_S = 600  # the warm-up's cold compile of the published UNet, field and VAE encoder takes minutes
GPU_SETTINGS = {"mesh.density_threshold": "10"}  # as bench/generate.py's TARGET_SETTINGS
# --tiny: the 'tiny' preset made smaller still (bench/generate.py's TINY_SETTINGS) and a mesh every 2 steps, so that
# the run takes seconds on a CPU; the untrained tiny field holds density 2 within a few steps
TINY_SETTINGS = {"phases.resolution_before": "16", "phases.resolution_after": "16", "mesh.resolution": "32",
                 "mesh.preview_resolution": "16", "run.views_resolution": "16", "run.turntable_views": "2",
                 "mesh.density_threshold": "2.0", "run.steps": "6", "run.mesh_every": "2", "run.views_every": "0"}
JOB_MESSAGES = ("progress", "mesh", "views", "done", "error")


def elapsed(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def generate_timeline(client: BackendClient, png: bytes, settings: dict, mesh_every: int, until: str,
                      empty_mesh_points: int, answer_s: float) -> tuple[dict, MeshUpdate | None]:
    """One generate job's messages timed from submit (seconds), and its first mesh (for ``mesh_stages_ms``)."""
    started = time.perf_counter()
    deadline = time.monotonic() + answer_s

    def next_message(predicate):
        left = deadline - time.monotonic()
        if left <= 0:  # messages that keep coming must not carry the job past its deadline
            raise TimeoutError(f"the generate job was still running after {answer_s:.0f} s")
        return client.wait_for(predicate, left)

    client.submit("generate", png, settings)
    accepted = next_message(lambda m: m.type in ("accepted", "error"))
    if accepted.type != "accepted":
        raise RuntimeError(f"the generate job was refused: {accepted.fields}")
    job = accepted.get("job")
    timeline: dict = {"job": job, "accepted_s": elapsed(started), "first_progress_s": None, "first_progress_step": None,
                      "meshes": [], "mesh_points": [], "views": [], "cancel_sent_s": None, "end": None, "end_s": None,
                      "last_step": 0}
    first_mesh = None
    cancel_sent = False
    while True:
        message = next_message(lambda m: m.type in JOB_MESSAGES and m.get("job") == job)
        now = elapsed(started)
        if message.type == "progress":
            step = message.get("step")
            if timeline["first_progress_s"] is None and message.get("phase") == "sds":
                timeline["first_progress_s"], timeline["first_progress_step"] = now, step
            # Meshes are made in the background: the mesh of point k comes at a later step boundary, at the latest
            # that of point k + mesh_every (the trainer waits for it before starting the next), so before step
            # k + mesh_every + 1's progress; none by then: the field was empty at k
            point = step - 1 - mesh_every
            if mesh_every and point > 0 and point % mesh_every == 0 and \
                    not any(p["step"] == point for p in timeline["mesh_points"]):
                timeline["mesh_points"].append({"step": point, "s": now, "faces": 0, "vertices": 0})
            timeline["last_step"] = max(timeline["last_step"], step)
        elif message.type == "mesh":
            faces, vertices = int(message.payload_specs[1]["shape"][0]), int(message.payload_specs[0]["shape"][0])
            entry = {"step": message.get("step"), "s": now, "faces": faces, "vertices": vertices,
                     "final": message.get("final")}
            timeline["meshes"].append(entry)
            if not entry["final"]:
                timeline["mesh_points"].append({k: entry[k] for k in ("step", "s", "faces", "vertices")})
            if first_mesh is None:
                first_mesh = MeshUpdate(decode_array(message, 0), decode_array(message, 1), decode_array(message, 2),
                                        entry["step"])
        elif message.type == "views":
            timeline["views"].append({"step": message.get("step"), "s": now})
        else:
            timeline["end"] = "done" if message.type == "done" else message.get("code")
            timeline["end_s"] = now
            break
        empty = sum(1 for p in timeline["mesh_points"] if not p["faces"])
        if until == "first-mesh" and not cancel_sent and (timeline["meshes"] or empty >= empty_mesh_points):
            client.cancel(job)
            cancel_sent, timeline["cancel_sent_s"] = True, elapsed(started)
    timeline["mesh_points"].sort(key=lambda p: p["step"])
    meshes = [p for p in timeline["mesh_points"] if p["faces"]]
    timeline["first_mesh_s"] = meshes[0]["s"] if meshes else None
    timeline["first_mesh_step"] = meshes[0]["step"] if meshes else None
    timeline["first_mesh_faces"] = meshes[0]["faces"] if meshes else 0
    timeline["first_mesh_point_s"] = timeline["mesh_points"][0]["s"] if timeline["mesh_points"] else None
    return timeline, first_mesh


class SetupLog(logging.Handler):
    """The ``setup_ms`` ({part: ms}) of each generate job, from the service's log line that carries it
    (backend.service.job_kinds.JobRunner._generate), while attached to the ``iso3d.server`` logger."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.setups: list[dict[str, float]] = []
        self.logger = logging.getLogger("iso3d.server")
        self.level_before = self.logger.level

    def __enter__(self) -> SetupLog:
        if not self.logger.isEnabledFor(logging.INFO):
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)

    def emit(self, record: logging.LogRecord) -> None:
        setup = getattr(record, "setup_ms", None)
        if isinstance(setup, dict):
            self.setups.append(dict(setup))


def mesh_stages(server: BackendServer, mesh: MeshUpdate) -> dict:
    """The service's work on a mesh event between the trainer and the message, in milliseconds (medians)."""
    record = server.store.create("generate", {}, None)
    try:
        return {"store_mesh_npz_and_record (after sending)": median_ms(lambda: server.store.record_event(record, mesh), 5),
                "mesh_message_encoding": median_ms(lambda: event_frames(record.id, mesh), 5)}
    finally:
        server.store.delete(record.id)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and settings (a quick CPU check)")
    parser.add_argument("--compile", default="auto", choices=["off", "default", "cudagraphs", "auto"],
                        help="as `iso3d serve --compile` (default auto: cudagraphs on a GPU, off on the CPU; the "
                        "warm-up runs when compiled, as in `iso3d serve`)")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a generate setting over the defaults (repeatable), e.g. mesh.density_threshold=5")
    parser.add_argument("--until", default="first-mesh", choices=["first-mesh", "done"],
                        help="first-mesh: cancel the job after its first mesh (keeps GPU time short)")
    parser.add_argument("--empty-mesh-points", type=int, default=2,
                        help="with --until first-mesh: give up after this many empty mesh points")
    parser.add_argument("--warmup-phases", default="all", choices=["all", "first"],
                        help="all: the warm-up of `iso3d serve` (SDS steps at each phase's shapes); first: phase 1's "
                        "only (the first mesh comes long before phase 2; saves phase 2's cold compile, ~90 s on an "
                        "H200)")
    parser.add_argument("--preview-steps", type=int, default=50)
    parser.add_argument("--preview-repeats", type=int, default=5, help="0: no preview measurement")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--answer-s", type=float, default=ANSWER_S,
                        help=f"deadline of the warm-up and of each job, seconds (default {ANSWER_S})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model_args = argparse.Namespace(model="tiny" if args.tiny else "random", device=args.device, dtype="auto",
                                    checkpoint=None, offline=True, compile=args.compile)
    model = load_model_from_args(model_args)
    device = model.device
    compiled = args.compile not in ("off", "auto") or (args.compile == "auto" and device.type == "cuda")
    settings = {"preset": "tiny" if args.tiny else args.preset, **(TINY_SETTINGS if args.tiny else GPU_SETTINGS)}
    settings.update(item.split("=", 1) for item in args.set)
    mesh_every = generate_config(settings).run.mesh_every
    info = {"date": time.strftime("%Y-%m-%d"), "commit": source_commit(), "machine": platform.node(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "model": model.name, "compile": args.compile,
            "warmup_phases": args.warmup_phases, "settings": settings, "mesh_every": mesh_every, "until": args.until,
            "model_setup_s": elapsed(started)}
    png = synthetic_input_png()
    with tempfile.TemporaryDirectory(prefix="iso3d-service-bench-") as data:
        warmup_settings = dict(TINY_WARMUP_GENERATE) if args.tiny else {}
        if args.warmup_phases == "first":
            warmup_settings["phases.switch_at"] = 1.0  # the switch at the last step: phase 1 only is warmed
        server = BackendServer(model, data, "tcp://127.0.0.1:*", warmup=compiled,
                               warmup_generate_settings=warmup_settings or None)
        thread = threading.Thread(target=server.serve_forever, name="iso3d-bench-server", daemon=True)
        thread.start()
        client = BackendClient(server.endpoint.replace("0.0.0.0", "127.0.0.1"))
        try:
            welcome = wait_until_warm(client, args.answer_s)
            info.update(warmup=welcome.get("warmup"), warmup_s=server.warmup.seconds,
                        warmup_parts_s=dict(server.warmup.parts), ready_after_start_s=elapsed(started))
            print(f"[service bench] warm after {info['ready_after_start_s']} s: {welcome.get('warmup')}", flush=True)
            with SetupLog() as setup_log:
                timeline, first_mesh = generate_timeline(client, png, settings, mesh_every, args.until,
                                                         args.empty_mesh_points, args.answer_s)
            info["generate"] = timeline
            info["setup_ms"] = setup_log.setups[0] if setup_log.setups else None
            if info["setup_ms"] and timeline["first_progress_s"] is not None:  # the queue, the socket, the messages
                info["setup_outside_job_ms"] = round(timeline["first_progress_s"] * 1000 - sum(info["setup_ms"].values()),
                                                     2)
            print(f"[service bench] setup_ms: {info['setup_ms']}", flush=True)
            print(f"[service bench] generate: {json.dumps(timeline, default=str)}", flush=True)
            info["mesh_stages_ms"] = mesh_stages(server, first_mesh) if first_mesh is not None else None
            if args.preview_repeats > 0:
                preview = PreviewSettings(steps=args.preview_steps, seed=0)
                image = prepare_preview_image(prepare_input(png, 1024).image)
                figures = service_latencies(server, png, {"steps": args.preview_steps, "seed": 0},
                                            args.preview_repeats,
                                            lambda marks: bare_preview(model, image, preview, device, marks),
                                            args.answer_s)
                for key in ("warmup", "warmup_s", "warmup_parts_s"):
                    figures.pop(key)
                figures["service_overhead_ms"] = round(figures["submit_to_views_ms"] - figures["bare_preview_ms"], 2)
                info["preview"] = {"steps": args.preview_steps, "repeats": args.preview_repeats, **figures}
            else:
                info["preview"] = None
        finally:
            client.close()
            server.stop_requested.set()
            thread.join(args.answer_s)
    if device.type == "cuda":
        info["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    info["wall_s"] = elapsed(started)
    text = json.dumps(info, indent=2, default=lambda value: value.tolist() if isinstance(value, np.ndarray) else str(value))
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return info


if __name__ == "__main__":
    main()

"""Named regions of a generation step, timed only while a profile records them (bench/generate.py --profile-steps).

The trainer, renderer and guidance mark their parts with ``with region("render.field"):``. With no recorder active
(every real run) a region is one global read on entry and one on exit. While a ``RegionRecorder`` is active, each
outermost region is

- labelled for torch.profiler (``torch.profiler.record_function("iso3d:<name>")``), so a trace shows it, and
- timed: on CUDA by events recorded on the current stream at its entry and exit (the GPU time between them, idle
  gaps included: the step's real cost of that part), on the CPU by the host clock; and on either, by the host clock
  as well (``host_totals_ms``: how long the host spent queueing the region, waits for the device included: where a
  step that is bound by its host goes).

A region inside another (the field's density queries inside ``mesh``, a render inside ``views``) is not counted on
its own: the totals are of top-level regions, which do not overlap, so what is left of the window is ``other``.
Times are milliseconds.

A ``HostClock`` (bench/trajectory.py: every step of a run) sums the host's time in each top-level region and in the
step's waits for the device, by the host clock alone: what the profile shows without the profiler's own overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from backend.gpu_idle import idle_gaps, kernels_by_region, launches_by_region, records_from_profiler

# The top-level regions, in the order a step runs them (names used by the trainer, renderer and guidance).
REGIONS = (
    "grid_update",  # occupancy grid refresh (every renderer.grid_update_every steps; all cells in its warm-up)
    "render.sampling",  # ray marching through the occupancy grid (+ the alpha-threshold density queries)
    "render.field",  # the field (hash grid + MLPs + analytic normals + shading) at every sample, forward
    "render.compositing",  # weights from densities, accumulation along rays
    "guidance.encode",  # renders resized to the latent input size + VAE encoder forward
    "guidance.unet",  # noise, the guidance UNet on [uncond; cond], the x0 target
    "backward",  # loss.backward(): VAE encoder, compositing and field backward
    "optimizer",  # zero_grad + AdamW step
    "mesh",  # mesh extraction (intermediate or final)
    "views",  # preview renders of the field
    "checkpoint",  # the optimisation state written to disk
    "bench.target",  # bench/trajectory.py only: the known object's target images
)

_recorder: RegionRecorder | None = None


class RegionRecorder:
    """Times the top-level regions entered between ``start()`` and ``stop()``; ``totals_ms`` per region name."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.depth = 0
        self.open: list[tuple[str, object, object, float]] = []  # (name, record_function, start marker, host start)
        self.pending: list[tuple[str, object, object, float]] = []  # (name, start, end marker, host ms) when closed
        self.window: tuple[object, object] | None = None
        self.totals_ms: dict[str, float] = {}
        self.host_totals_ms: dict[str, float] = {}
        self.window_ms = 0.0
        self.host_window_ms = 0.0

    def _marker(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _elapsed_ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def start(self) -> None:
        global _recorder
        if _recorder is not None:
            raise RuntimeError("a region recorder is already active")
        self.window = (self._marker(), time.perf_counter())
        _recorder = self

    def stop(self) -> dict[str, float]:
        """Stop recording; returns the totals (ms per region over the window; the window's own in ``window_ms``)."""
        global _recorder
        if _recorder is self:
            _recorder = None
        end = self._marker()
        self.host_window_ms = (time.perf_counter() - self.window[1]) * 1e3
        if self.cuda:
            torch.cuda.synchronize()
        self.window_ms = self._elapsed_ms(self.window[0], end)
        for name, begin, finish, host_ms in self.pending:
            self.totals_ms[name] = self.totals_ms.get(name, 0.0) + self._elapsed_ms(begin, finish)
            self.host_totals_ms[name] = self.host_totals_ms.get(name, 0.0) + host_ms
        self.pending.clear()
        return self.totals_ms

    def enter(self, name: str) -> None:
        self.depth += 1
        if self.depth == 1:
            label = torch.profiler.record_function(f"iso3d:{name}")
            label.__enter__()
            self.open.append((name, label, self._marker(), time.perf_counter()))

    def exit(self, name: str) -> None:
        if self.depth == 0:  # entered before the recorder started: not counted
            return
        self.depth -= 1
        if self.depth == 0 and self.open:
            opened, label, begin, host_begin = self.open.pop()
            self.pending.append((opened, begin, self._marker(), (time.perf_counter() - host_begin) * 1e3))
            label.__exit__(None, None, None)


class _Region:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        if _recorder is not None:
            _recorder.enter(self.name)
        if _host_clock is not None:
            _host_clock.enter(self.name)

    def __exit__(self, *exc) -> None:
        if _recorder is not None:
            _recorder.exit(self.name)
        if _host_clock is not None:
            _host_clock.exit(self.name)


_REGION_OBJECTS = {name: _Region(name) for name in REGIONS}


def region(name: str) -> _Region:
    """The context manager of region ``name`` (one of ``REGIONS``)."""
    return _REGION_OBJECTS[name]


class HostClock:
    """The host's seconds in a step, on every step (bench/trajectory.py), without the profiler that slows the host:
    ``wait_seconds`` inside the step's known waits for the device (``with host_wait():`` around each call that
    synchronises: the occupancy grid's march sizing its outputs, the density filter's count of visible samples), and
    ``region_seconds``: the host's time in each top-level region (waits included, so ``render.sampling`` holds them).

    A step's host time less its waits is the host's own work (Python, dispatch, launches): near the step's time, the
    step is bound by its host; well under it, by its GPU. Set against the GPU's busy time in each region (the
    profile's ``kernels_by_region``), the region times say where a host-bound step's host time goes. Costs two host
    clock reads a region."""

    def __init__(self):
        self.wait_seconds = 0.0
        self.region_seconds: dict[str, float] = {}
        self._depth = 0
        self._entered = 0.0

    def start(self) -> None:
        global _host_clock
        if _host_clock is not None:
            raise RuntimeError("a host clock is already running")
        _host_clock = self

    def stop(self) -> None:
        global _host_clock
        if _host_clock is self:
            _host_clock = None

    def enter(self, name: str) -> None:
        self._depth += 1
        if self._depth == 1:
            self._entered = time.perf_counter()

    def exit(self, name: str) -> None:
        if self._depth == 0:  # entered before the clock started: not counted
            return
        self._depth -= 1
        if self._depth == 0:
            self.region_seconds[name] = self.region_seconds.get(name, 0.0) + time.perf_counter() - self._entered


_host_clock: HostClock | None = None


class _HostWait:
    __slots__ = ("started",)

    def __enter__(self) -> None:
        if _host_clock is not None:
            self.started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if _host_clock is not None:
            _host_clock.wait_seconds += time.perf_counter() - self.started


def host_wait() -> _HostWait:
    """Around a call that waits for the device: its time is summed while a ``HostClock`` runs (one global read on
    entry and one on exit otherwise)."""
    return _HostWait()


def compiled_cache_entries(functions: dict[str, Callable]) -> dict[str, int]:
    """{name: how many compiled entries torch.compile holds for the function's code}: Dynamo checks a call's guards
    against each entry in turn until one holds, so entries left by other instances, precisions or shapes cost
    every call (bench/generate.py records the field's after each run)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return {name: len(_debug_get_cache_entry_list(function.__code__)) for name, function in functions.items()}


def graphs_compiled() -> int:
    """How many graphs torch.compile has traced in this process so far (Dynamo's ``unique_graphs``): read around a
    step, a rise says the step traced (and compiled or loaded) a graph, which a slow step's time may be."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


COMPILE_PHASES_KEPT = 30  # compile_statistics_since keeps the costliest phases


def compile_statistics() -> dict:
    """torch.compile's work in this process so far: ``seconds`` {phase: [total s, calls]} (Dynamo's timed phases:
    tracing, AOTAutograd, Inductor's compile or cache load, CUDA-graph recording ...; nested phases overlap) and
    ``counters`` {group: {name: count}} of its caches (``inductor``: fxgraph_cache_hit / _miss / _bypass,
    ``aot_autograd``: autograd_cache_hit / _miss / _bypass, ``stats``: unique_graphs ...). ``since(before)`` of two
    snapshots gives what happened between them."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    groups = ("inductor", "aot_autograd", "stats", "graph_break", "recompiles")
    return {"seconds": {name: [round(sum(times), 3), len(times)] for name, times in compilation_time_metrics.items()},
            "counters": {group: {name: int(count) for name, count in counters[group].items()} for group in groups
                         if group in counters}}


def compile_statistics_since(before: dict, after: dict | None = None) -> dict:
    """What ``compile_statistics()`` rose by since ``before`` (only what changed)."""
    after = compile_statistics() if after is None else after
    seconds = {}
    for name, (total, calls) in after["seconds"].items():
        total_before, calls_before = before["seconds"].get(name, (0.0, 0))
        if calls > calls_before:
            seconds[name] = [round(total - total_before, 3), calls - calls_before]
    counters = {}
    for group, values in after["counters"].items():
        risen = {name: count - before["counters"].get(group, {}).get(name, 0) for name, count in values.items()}
        risen = {name: count for name, count in risen.items() if count}
        if risen:
            counters[group] = risen
    top = sorted(seconds.items(), key=lambda item: -item[1][0])[:COMPILE_PHASES_KEPT]
    return {"seconds": dict(top), "counters": counters}


class Laps:
    """Host wall-clock milliseconds of consecutive one-off parts (a job's set-up, not steps: no device
    synchronisation): ``laps("name")`` ends the part begun at the previous call (or at construction) and begins the
    next; ``laps.ms`` (``into`` when given) holds {name: ms}."""

    def __init__(self, into: dict[str, float] | None = None):
        self.ms = {} if into is None else into
        self._first = self._last = time.perf_counter()

    def total_ms(self) -> float:
        """Milliseconds since construction."""
        return (time.perf_counter() - self._first) * 1000

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round((now - self._last) * 1000, 2)
        self._last = now


class StepProfile:
    """``steps`` steps recorded with torch.profiler (CPU, and CUDA activities on a GPU) and a RegionRecorder:
    ``start()`` before the first step, ``stop()`` once they (and whatever ran between them) are done."""

    def __init__(self, device: torch.device, steps: int, top: int = 15):
        self.device = torch.device(device)
        self.steps = steps
        self.top = top
        self.recorder = RegionRecorder(self.device)
        self.profiler = None
        self.profiler_error: str | None = None
        self.syncs = HostSyncs() if self.device.type == "cuda" else None

    def start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        try:
            self.profiler = profile(activities=activities)
            self.profiler.start()
        except Exception as error:  # noqa: BLE001 - e.g. no CUPTI: the regions are still timed, the table says why
            self.profiler, self.profiler_error = None, f"{type(error).__name__}: {error}"[:300]
        if self.syncs is not None:
            self.syncs.start()
        self.recorder.start()

    def stop(self) -> dict:
        """The summary: milliseconds per step of each region and of the whole window, and the top kernels (CUDA)
        or operators (CPU, by self time) over the window."""
        totals = self.recorder.stop()
        steps = max(self.steps, 1)
        sync_sites = self.syncs.stop(steps, self.top) if self.syncs is not None else None
        window = self.recorder.window_ms / steps
        regions = {name: round(totals[name] / steps, 3) for name in REGIONS if name in totals}
        regions["other"] = round(max(window - sum(regions.values()), 0.0), 3)
        host = {name: round(self.recorder.host_totals_ms[name] / steps, 3) for name in REGIONS
                if name in self.recorder.host_totals_ms}
        host_window = self.recorder.host_window_ms / steps
        host["other"] = round(max(host_window - sum(host.values()), 0.0), 3)
        summary = {"steps": self.steps, "timing": "cuda events" if self.recorder.cuda else "host clock",
                   "step_ms": round(window, 3), "regions_ms_per_step": regions,
                   "host_step_ms": round(host_window, 3), "host_regions_ms_per_step": host, "top_kind": "", "top": []}
        try:  # the table of kernels is a bonus: the region times stand without it
            if self.profiler is not None:
                self.profiler.stop()
                summary.update(self._tables(steps))
        except Exception as error:  # noqa: BLE001
            self.profiler_error = f"{type(error).__name__}: {error}"[:300]
        if self.profiler_error:
            summary["top_error"] = self.profiler_error
        if sync_sites is not None:
            summary["host_syncs_per_step"] = round(sum(site["per_step"] for site in sync_sites), 2)
            summary["sync_sites"] = sync_sites
        return summary

    def _tables(self, steps: int) -> dict:
        """``top_kind`` and ``top``: the top CUDA kernels (on CUDA) or CPU operators by self time (elsewhere); on CUDA
        also the device's busy time and kernel count a step (kernels and copies summed, one stream assumed) and
        ``top_host``: the host's operators and CUDA runtime calls by self time (a synchronisation shows as the time
        the host waited in cudaStreamSynchronize / cudaMemcpyAsync)."""
        from torch.autograd import DeviceType

        # The profiler's raw events, not its events()/key_averages(): those build a Python object tree of every
        # event first, 8 of the 17 CPU s of a one-step tiny CPU profile (bench/generate.py --profile-steps 1).
        events = self.profiler.profiler.kineto_results.events()
        # the iso3d: region labels span the work in them: left out of the host table and of the device's sums (the
        # kernel table shows each region's device span beside the kernels)
        host = {name: entry for name, entry in cpu_self_times(events).items() if not name.startswith("iso3d:")}
        if self.device.type != "cuda":
            return {"top_kind": "CPU operators (self time)", "top": self._ranked(host)}
        device: dict[str, list[float]] = {}
        for event in events:
            if event.device_type() == DeviceType.CUDA:
                entry = device.setdefault(event.name(), [0.0, 0])
                entry[0] += event.duration_ns() / 1e6
                entry[1] += 1
        work = [entry for name, entry in device.items() if not name.startswith("iso3d:")]
        records = records_from_profiler(events)
        return {"top_kind": "CUDA kernels", "top": self._ranked(device),
                "gpu_busy_ms_per_step": round(sum(ms for ms, _ in work) / steps, 3),
                "gpu_kernels_per_step": round(sum(calls for _, calls in work) / steps, 1),
                "top_host": self._ranked(host),
                "runtime_calls_by_region": launches_by_region(records, steps),
                "kernels_by_region": kernels_by_region(records, steps),
                **idle_gaps(records, steps, self.top)}

    def _ranked(self, totals: dict[str, list[float]]) -> list[dict]:
        ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:self.top]
        return [{"name": name[:120], "ms_total": round(ms, 3), "calls": int(calls)} for name, (ms, calls) in ranked]


class HostSyncs:
    """Where the host waits for the GPU (CUDA): torch's synchronisation debug mode warns at every synchronising call
    of torch's own ops (``.item()``, a boolean mask, ``nonzero``, a blocking copy); the warnings are counted by the
    Python line that made the call, between ``start()`` and ``stop()``. An extension's C++ reads (nerfacc's traversal
    sizing its outputs, twice a render) warn outside Python and are not counted. Each warning costs the host a
    little: the steps it covers are profiled steps, kept out of the timings."""

    def __init__(self):
        self._catcher = None
        self._records: list = []

    def start(self) -> None:
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self, steps: int, top: int) -> list[dict]:
        """The call sites (``path:line``, the path from its package folder on) ranked by synchronisations a step."""
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        counts: dict[str, int] = {}
        for record in self._records:
            if "synchroniz" in str(record.message):
                where = "/".join(str(record.filename).replace("\\", "/").split("/")[-2:]) + f":{record.lineno}"
                counts[where] = counts.get(where, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [{"where": where, "per_step": round(count / steps, 2)} for where, count in ranked]


def cpu_self_times(events) -> dict[str, list[float]]:
    """{name: [self milliseconds, calls]} of the CPU events among raw profiler events: each event's duration less
    the durations of the events nested directly in it on its thread, as key_averages' self CPU time (and, as there,
    an event whose one child has its name, a dispatcher's re-dispatch, counts as one call)."""
    from torch.autograd import DeviceType

    threads: dict[int, list] = {}
    for event in events:
        if event.device_type() == DeviceType.CPU:
            threads.setdefault(event.start_thread_id(), []).append(event)
    totals: dict[str, list[float]] = {}

    def close(name: str, end: int, self_ns: int, children: int, same_name_children: int) -> None:
        entry = totals.setdefault(name, [0.0, 0])
        entry[0] += self_ns / 1e6
        entry[1] += 0 if children == 1 and same_name_children == 1 else 1

    for thread in threads.values():
        thread.sort(key=lambda event: (event.start_ns(), -event.end_ns()))  # a parent before its first child
        open_events: list[list] = []  # [name, end ns, self ns, children, children of the same name], outermost first
        for event in thread:
            name, start, end = event.name(), event.start_ns(), event.end_ns()
            while open_events and open_events[-1][1] <= start:
                close(*open_events.pop())
            if open_events:
                parent = open_events[-1]
                parent[2] -= end - start
                parent[3] += 1
                parent[4] += name == parent[0]
            open_events.append([name, end, end - start, 0, 0])
        while open_events:
            close(*open_events.pop())
    return totals


def format_profile(summary: dict) -> str:
    """The summary as a compact text table (printed by bench/generate.py)."""
    step = summary["step_ms"] or float("nan")
    phase = f"phase-{summary['phase']} " if "phase" in summary else ""
    lines = [f"profile: {summary['steps']} {phase}step(s), {step:.1f} ms/step ({summary['timing']})",
             f"  {'region':<20s} {'ms/step':>9s} {'share':>6s} {'host ms':>9s}"]
    host = summary.get("host_regions_ms_per_step", {})
    for name, ms in summary["regions_ms_per_step"].items():
        lines.append(f"  {name:<20s} {ms:9.2f} {100 * ms / step:5.1f}% {host.get(name, float('nan')):9.2f}")
    if summary.get("top_error"):
        lines.append(f"  no kernel table: {summary['top_error']}")
    if "gpu_busy_ms_per_step" in summary:
        lines.append(f"  GPU busy {summary['gpu_busy_ms_per_step']:.2f} ms/step in "
                     f"{summary['gpu_kernels_per_step']:.0f} kernels and copies a step")
    if summary.get("idle_top"):
        lines.append(f"  GPU idle {summary['gpu_idle_ms_per_step']:.2f} ms/step, by the launch that ended each gap "
                     "(region / host operator: ms a step, gaps a step):")
        for row in summary["idle_top"]:
            lines.append(f"  {row['ms_per_step']:9.3f} {row['gaps_per_step']:7.1f}  {row['region']} / "
                         f"{row['operator'][:80]}")
    if summary.get("runtime_calls_by_region"):
        lines.append("  CUDA runtime calls a step by region (calls, host ms): " + ", ".join(
            f"{name} {row['calls_per_step']:.0f} / {row['host_ms_per_step']:.2f}"
            for name, row in summary["runtime_calls_by_region"].items()))
    if summary.get("kernels_by_region"):
        lines.append("  GPU work a step by the region that launched it (ms a step, calls a step):")
        for name, row in summary["kernels_by_region"].items():
            lines.append(f"  {row['gpu_ms_per_step']:9.3f}         {name}")
            for kernel in row["top"]:
                lines.append(f"  {'':>9s} {kernel['ms_per_step']:7.3f} {kernel['calls_per_step']:6.1f}  "
                             f"{kernel['name'][:80]}")
                for site in kernel.get("launched_from", [])[:2]:
                    lines.append(f"  {'':>17s} {site['ms_per_step']:7.3f} {site['calls_per_step']:6.1f}  from "
                                 f"{site['operators'][-110:]}")
    lines.append(f"  top {len(summary['top'])} {summary['top_kind']} over the window (ms total, calls):")
    for row in summary["top"]:
        lines.append(f"  {row['ms_total']:9.2f} {row['calls']:6d}  {row['name'][:90]}")
    if summary.get("top_host"):
        lines.append(f"  top {len(summary['top_host'])} host operators and runtime calls (self ms total, calls):")
        for row in summary["top_host"]:
            lines.append(f"  {row['ms_total']:9.2f} {row['calls']:6d}  {row['name'][:90]}")
    if summary.get("sync_sites") is not None:
        lines.append(f"  host synchronisations: {summary['host_syncs_per_step']:.1f} a step, by call site:")
        for site in summary["sync_sites"]:
            lines.append(f"  {site['per_step']:9.2f}  {site['where']}")
    return "\n".join(lines)

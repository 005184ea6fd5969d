"""Where the GPU waits for the host, from a torch.profiler trace (bench/generate.py --profile-steps, CUDA).

A step bound by its host shows as gaps between the GPU's kernels: the device has run everything queued and waits
for the next launch. Each gap is put down to the launch that ended it: the CUDA runtime call with the same
correlation id as the kernel (or copy) after the gap, the innermost operator the host was running at that call
(on the launching thread: the autograd engine's own thread launches the backward), and the top-level step region
(backend.profiling) open at that moment. A gap that follows a host synchronisation is the host's work between the
synchronisation and its next launch; the operator named is where that work ended.

Works on plain records, not on the profiler's objects, so it is tested on the CPU with records a test writes
(tests/test_gpu_idle.py); ``records_from_profiler`` turns the profiler's raw events into them. Times are
nanoseconds in, milliseconds out.
"""

from __future__ import annotations

from dataclasses import dataclass

REGION_PREFIX = "iso3d:"  # backend.profiling's region labels; "iso3d::" names are custom ops (the hash grid's)


def _is_region(name: str) -> bool:
    return name.startswith(REGION_PREFIX) and not name.startswith("iso3d::")


@dataclass(frozen=True)
class TraceRecord:
    """One profiler event: ``on_device`` for kernels, copies and sets on the GPU; ``correlation`` links a runtime
    call (cudaLaunchKernel, cudaGraphLaunch, cudaMemcpyAsync, ...) to the device work it queued (0: none)."""

    name: str
    start_ns: int
    end_ns: int
    on_device: bool
    thread: int = 0
    correlation: int = 0


def _is_runtime_call(name: str) -> bool:
    return name.startswith(("cuda", "cu")) and not name.startswith("cudnn")


def records_from_profiler(events) -> list[TraceRecord]:
    """The profiler's raw events (``profiler.profiler.kineto_results.events()``) as TraceRecords."""
    from torch.autograd import DeviceType

    records = []
    for event in events:
        on_device = event.device_type() == DeviceType.CUDA
        records.append(TraceRecord(event.name(), event.start_ns(), event.end_ns(), on_device,
                                   0 if on_device else event.start_thread_id(), event.correlation_id()))
    return records


def _enclosing(spans: list[TraceRecord], times: list[int], depth: int = 1) -> list[tuple[str, ...]]:
    """For each time (any order), the names of the ``depth`` innermost spans containing it, outermost first (empty:
    none); spans nest."""
    order = sorted(range(len(times)), key=times.__getitem__)
    spans = sorted(spans, key=lambda span: (span.start_ns, -span.end_ns))
    found: list[tuple[str, ...]] = [()] * len(times)
    stack: list[TraceRecord] = []
    next_span = 0
    for index in order:
        t = times[index]
        while next_span < len(spans) and spans[next_span].start_ns <= t:
            span = spans[next_span]
            while stack and stack[-1].end_ns <= span.start_ns:
                stack.pop()
            stack.append(span)
            next_span += 1
        while stack and stack[-1].end_ns <= t:
            stack.pop()
        found[index] = tuple(span.name for span in stack[-depth:])
    return found


def _innermost(spans: list[TraceRecord], times: list[int]) -> list[str | None]:
    """For each time (any order), the name of the innermost span containing it (None: none); spans nest."""
    return [names[-1] if names else None for names in _enclosing(spans, times)]


def _region_label(name: str | None) -> str:
    """A region span's name as the tables show it ("(none)": outside every region)."""
    return name[len(REGION_PREFIX):] if name else "(none)"


def _launching_regions(records: list[TraceRecord], work: list[TraceRecord]) -> tuple[list, list[str]]:
    """For each item of device ``work``: the runtime call that launched it (by correlation id; None: not found) and
    the label of the step region open at that call (at the item's own start where no launch is found)."""
    launches = {r.correlation: r for r in records if not r.on_device and r.correlation and _is_runtime_call(r.name)}
    regions = [r for r in records if not r.on_device and _is_region(r.name)]
    launch_of = [launches.get(item.correlation) for item in work]
    names = _innermost(regions, [launch.start_ns if launch else item.start_ns for launch, item in zip(launch_of, work)])
    return launch_of, [_region_label(name) for name in names]


def idle_gaps(records: list[TraceRecord], steps: int, top: int = 15, min_gap_us: float = 1.0) -> dict:
    """``gpu_idle_ms_per_step`` (the device's gaps between its first and last work), ``idle_by_region`` (ms a step
    by the step region open at the launch that ended each gap; "(none)" outside regions) and ``idle_top``: the
    largest (region, operator) pairs by ms a step, with their gaps a step. Gaps under ``min_gap_us`` are counted in
    the total but not attributed (launch-to-launch spacing of back-to-back kernels)."""
    steps = max(steps, 1)
    # a region's device-side span is not work (and no kernel's name starts with the prefix)
    device = sorted((r for r in records if r.on_device and not r.name.startswith(REGION_PREFIX)),
                    key=lambda r: r.start_ns)
    if not device:
        return {"gpu_idle_ms_per_step": 0.0, "idle_by_region": {}, "idle_top": []}
    gaps: list[tuple[int, TraceRecord]] = []  # (gap ns, the device work that ended it)
    busy_until = device[0].end_ns
    for work in device[1:]:
        if work.start_ns > busy_until:
            gaps.append((work.start_ns - busy_until, work))
        busy_until = max(busy_until, work.end_ns)
    total_ns = sum(gap for gap, _ in gaps)
    attributed = [(gap, work) for gap, work in gaps if gap >= min_gap_us * 1e3]
    launch_of, region_labels = _launching_regions(records, [work for _, work in attributed])
    operator_names = [chain[-1] if chain else None for chain in _launching_operators(records, launch_of, 1)]
    by_region: dict[str, float] = {}
    by_pair: dict[tuple[str, str], list[float]] = {}
    for (gap, work), region_label, operator, launch in zip(attributed, region_labels, operator_names, launch_of):
        operator_label = operator or (launch.name if launch else f"(no launch found: {work.name[:60]})")
        by_region[region_label] = by_region.get(region_label, 0.0) + gap
        entry = by_pair.setdefault((region_label, operator_label[:100]), [0.0, 0])
        entry[0] += gap
        entry[1] += 1
    ranked = sorted(by_pair.items(), key=lambda item: -item[1][0])[:top]
    return {
        "gpu_idle_ms_per_step": round(total_ns / 1e6 / steps, 3),
        "idle_by_region": {name: round(ns / 1e6 / steps, 3)
                           for name, ns in sorted(by_region.items(), key=lambda item: -item[1])},
        "idle_top": [{"region": region_label, "operator": operator, "ms_per_step": round(ns / 1e6 / steps, 3),
                      "gaps_per_step": round(count / steps, 2)}
                     for (region_label, operator), (ns, count) in ranked],
    }


def launches_by_region(records: list[TraceRecord], steps: int) -> dict[str, dict[str, float]]:
    """Per step region ("(none)" outside them): the CUDA runtime calls a step made there (kernel and graph launches,
    copies, synchronisations: each one's host cost is what a step bound by its host pays) and their host ms a step."""
    steps = max(steps, 1)
    calls = [r for r in records if not r.on_device and _is_runtime_call(r.name)]
    regions = [r for r in records if not r.on_device and _is_region(r.name)]
    names = _innermost(regions, [call.start_ns for call in calls])
    totals: dict[str, list[float]] = {}
    for call, region_name in zip(calls, names):
        entry = totals.setdefault(_region_label(region_name), [0, 0.0])
        entry[0] += 1
        entry[1] += call.end_ns - call.start_ns
    return {name: {"calls_per_step": round(count / steps, 1), "host_ms_per_step": round(ns / 1e6 / steps, 3)}
            for name, (count, ns) in sorted(totals.items(), key=lambda item: -item[1][0])}


def _operators_by_thread(records: list[TraceRecord]) -> dict[int, list[TraceRecord]]:
    """The host operators (not regions, not runtime calls) of each thread."""
    by_thread: dict[int, list[TraceRecord]] = {}
    for r in records:
        if not r.on_device and not _is_region(r.name) and not _is_runtime_call(r.name):
            by_thread.setdefault(r.thread, []).append(r)
    return by_thread


def _launching_operators(records: list[TraceRecord], launch_of: list, depth: int) -> list[tuple[str, ...]]:
    """For each launch (None: not found), the ``depth`` innermost host operators open on its thread at the launch,
    outermost first (empty: none or no launch)."""
    operators = _operators_by_thread(records)
    found: list[tuple[str, ...]] = [()] * len(launch_of)
    by_thread: dict[int, list[int]] = {}
    for index, launch in enumerate(launch_of):
        if launch is not None:
            by_thread.setdefault(launch.thread, []).append(index)
    for thread, indices in by_thread.items():
        chains = _enclosing(operators.get(thread, []), [launch_of[i].start_ns for i in indices], depth)
        for index, chain in zip(indices, chains):
            found[index] = chain
    return found


def kernels_by_region(records: list[TraceRecord], steps: int, top: int = 6, sources: int = 3,
                      depth: int = 3) -> dict[str, dict]:
    """Per step region ("(none)" outside them), the device's work that the region queued: each kernel, copy or set
    put down to the region open at the runtime call that launched it (by correlation id, on any thread: the autograd
    engine's launches fall in ``backward``; a CUDA graph's kernels under its graph launch), as ``gpu_ms_per_step``
    (their summed durations) and ``top``: the ``top`` largest by name, ms and calls a step, each with
    ``launched_from``: its ``sources`` largest host call sites, as the ``depth`` innermost operators open on the
    launching thread at the launch (outermost first, joined by " > "; "(no operator)" where none was open), with
    their ms and calls a step. A kernel as common as a copy is launched from many places; the call site says which
    of them costs. Regions are ranked by their GPU time. A region's device time differs from its CUDA-event span
    (``regions_ms_per_step``) by the gaps in it and by work queued there that runs after it ends."""
    steps = max(steps, 1)
    work = [r for r in records if r.on_device and not r.name.startswith(REGION_PREFIX)]
    launch_of, labels = _launching_regions(records, work)
    chains = _launching_operators(records, launch_of, depth)
    totals: dict[str, dict[str, list]] = {}
    for item, label, chain in zip(work, labels, chains):
        entry = totals.setdefault(label, {}).setdefault(item.name, [0.0, 0, {}])
        duration = item.end_ns - item.start_ns
        entry[0] += duration
        entry[1] += 1
        site = " > ".join(name[:60] for name in chain) or "(no operator)"
        site_entry = entry[2].setdefault(site, [0.0, 0])
        site_entry[0] += duration
        site_entry[1] += 1
    table = {}
    for label, kernels in sorted(totals.items(), key=lambda item: -sum(row[0] for row in item[1].values())):
        ranked = sorted(kernels.items(), key=lambda item: -item[1][0])[:top]
        table[label] = {
            "gpu_ms_per_step": round(sum(row[0] for row in kernels.values()) / 1e6 / steps, 3),
            "top": [{"name": name[:100], "ms_per_step": round(ns / 1e6 / steps, 3),
                     "calls_per_step": round(calls / steps, 1),
                     "launched_from": [{"operators": site, "ms_per_step": round(site_ns / 1e6 / steps, 3),
                                        "calls_per_step": round(site_calls / steps, 1)}
                                       for site, (site_ns, site_calls) in
                                       sorted(sites.items(), key=lambda item: -item[1][0])[:sources]]}
                    for name, (ns, calls, sites) in ranked]}
    return table

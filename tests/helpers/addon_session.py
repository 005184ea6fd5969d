"""Driving the add-on's session from a test in background bpy, where timers never fire: ``SESSION.drain`` is called
directly until a condition on the scene's job state holds. Import only where bpy is loaded (blender tests)."""

from __future__ import annotations

import time

import bpy

from blender_addon.preferences import session_settings
from blender_addon.session import SESSION
from tests.helpers.waiting import wait_until

# A tiny-model generate job streaming meshes takes ~20 s on a quiet 2-core machine and several minutes at a load
# average of 15: the deadline only bounds how long a real hang takes to fail.
JOB_S = 600.0
# Generate options (the panel's JSON options) that make a tiny-model job small: 24x24 renders in both phases, a
# 32^3 final mesh, a low density threshold so the untrained field still gives a surface.
SMALL = {"phases.resolution_before": 24, "phases.resolution_after": 24, "mesh.resolution": 32,
         "mesh.preview_resolution": 24, "mesh.density_threshold": 2.0}


def describe_state() -> str:
    state = bpy.context.scene.iso3d_job
    return (f"job state {state.state!r} ({state.job_kind}) phase {state.phase!r} step {state.step}, connection "
            f"{state.connection}, error {state.last_error!r}; {SESSION.local_backend.status_line()}")


def drain() -> int:
    """One drain of the session with the registered add-on's preferences (what the UI timer does)."""
    return SESSION.drain(bpy.context, session_settings(bpy.context))


def drain_until(predicate, timeout: float = JOB_S, on_drain=None):
    """Drains the session until ``predicate(scene.iso3d_job)`` holds; returns the state."""

    def condition():
        drain()
        if on_drain is not None:
            on_drain()
        state = bpy.context.scene.iso3d_job
        return state if predicate(state) else None

    return wait_until(condition, timeout, describe_state)


def drain_everything_sent(timeout: float = JOB_S) -> None:
    """Drains until the backend answers a ping sent now. One socket carries both ways in order, so by then the
    backend has handled every request the add-on sent before, and the add-on has applied every answer sent before
    the pong (a condition in place of "drain for a while and see that nothing more happens")."""
    token = f"barrier-{time.monotonic_ns()}"
    answered = []
    original = SESSION.apply

    def recording(context, settings, message):
        if message.type == "pong" and message.get("token") == token:
            answered.append(message)
        return original(context, settings, message)

    SESSION.apply = recording
    try:
        SESSION.client.ping(token)
        wait_until(lambda: drain() >= 0 and answered, timeout, "the backend's pong")
    finally:
        SESSION.apply = original

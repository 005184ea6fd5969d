"""Streamed job events (backend.events: progress, views, meshes) as protocol messages: one event, one message."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from backend.events import Event, MeshUpdate, Progress, Views
from blender_addon.core import protocol


# the views' PNGs are encoded side by side: PIL's PNG encoder (filtering and zlib) runs without the GIL
_PNG_ENCODERS = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="iso3d-png")


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_pngs(images) -> list[bytes]:
    """``png_bytes`` of each image, in order, encoded in parallel."""
    if len(images) < 2:
        return [png_bytes(image) for image in images]
    return list(_PNG_ENCODERS.map(png_bytes, images))


def event_frames(job: str, event: Event, position: int | None = None) -> list[bytes]:
    """The frames of the protocol message for ``event`` of ``job``."""
    if isinstance(event, Progress):
        fields = dict(
            job=job,
            phase=event.phase,
            step=int(event.step),
            total=int(event.total),
            elapsed=float(event.elapsed),
            losses={k: float(v) for k, v in event.losses.items()},
        )
        if event.eta is not None:
            fields["eta"] = float(event.eta)
        if position is not None:
            fields["position"] = position
        return protocol.encode("progress", **fields)
    if isinstance(event, Views):
        payloads = [protocol.png_payload(png) for png in encode_pngs(event.images)]
        fields = dict(
            job=job,
            kind=event.kind,
            elevations=[float(e) for e in event.elevations],
            azimuths=[float(a) for a in event.azimuths],
            c2w=[np.asarray(m, dtype=np.float64).reshape(16).tolist() for m in event.c2w],
        )
        if event.step is not None:
            fields["step"] = int(event.step)
        return protocol.encode("views", payloads, **fields)
    if isinstance(event, MeshUpdate):
        vertices = np.ascontiguousarray(event.vertices, dtype="<f4")
        faces = np.ascontiguousarray(event.faces, dtype="<i4")
        colours = np.ascontiguousarray(event.vertex_colors, dtype="|u1")
        payloads = [
            protocol.array_payload("<f4", list(vertices.shape), vertices.tobytes()),
            protocol.array_payload("<i4", list(faces.shape), faces.tobytes()),
            protocol.array_payload("|u1", list(colours.shape), colours.tobytes()),
        ]
        if event.uvs is not None and event.texture is not None:
            uvs = np.ascontiguousarray(event.uvs, dtype="<f4")
            payloads.append(protocol.array_payload("<f4", list(uvs.shape), uvs.tobytes()))
            payloads.append(protocol.png_payload(png_bytes(event.texture, compress_level=6)))
        return protocol.encode("mesh", payloads, job=job, step=int(event.step), final=bool(event.final),
                               level=int(event.level))
    raise TypeError(f"not a streamed job event: {event!r} (done and error are built by the server, which knows the "
                    "job's files and what a client may see)")

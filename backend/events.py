"""The typed events that jobs (preview, generate, ...) yield while they run: the one list of event types.

Jobs are generators of these; the CLI draws them as a progress bar and files, and the service sends each one as
one protocol message. Arrays are numpy (not torch) so that events cross process and network boundaries as they are.
Angles are in degrees; matrices are camera-to-world in Blender's Z-up world (see backend.diffusion.cameras).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Progress:
    """A job advanced: ``step`` of ``total`` in ``phase``; ``eta`` in seconds (None when unknown)."""

    phase: str
    step: int
    total: int
    elapsed: float
    eta: float | None = None
    losses: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Views:
    """Multi-view images: the diffusion preview (``kind='preview'``) or renders of the 3-D result (``'render'``).

    images: uint8 [V, H, W, 3] (RGB, white background); elevations/azimuths in degrees; c2w float32 [V, 4, 4].
    """

    kind: str
    images: np.ndarray
    elevations: list[float]
    azimuths: list[float]
    c2w: np.ndarray
    step: int | None = None


@dataclass(frozen=True)
class MeshUpdate:
    """A mesh: vertices float32 [V, 3] (Blender Z-up, object space), faces int32 [F, 3] (counter-clockwise seen
    from outside), vertex colours uint8 [V, 3]. ``final`` marks the finished asset.

    A finished (textured) asset also has ``uvs`` float32 [F, 3, 2] (one per face corner, v up: texel row =
    (1 - v) * height), ``texture`` uint8 [H, W, 3] (the baked albedo, row 0 at the top) and ``level``: 0 for the
    main face budget, i for the i-th LOD."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray
    step: int
    final: bool = False
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    level: int = 0


@dataclass(frozen=True)
class Done:
    """The job finished; ``artifacts`` maps artifact names (e.g. 'mesh.glb') to file paths; ``note`` says in
    words what was adapted on the way (e.g. a face budget above the surface: kept whole), "" when nothing was."""

    artifacts: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Failed:
    """The job stopped on an error; ``code`` is a short machine-readable word, ``message`` plain words."""

    code: str
    message: str


@dataclass(frozen=True)
class Queued:
    """The job waits in the service's queue at ``position`` (1 = next); sent when jobs ahead of it start."""

    position: int


Event = Progress | Views | MeshUpdate | Done | Failed | Queued
EVENT_TYPES: tuple[type, ...] = (Progress, Views, MeshUpdate, Done, Failed, Queued)

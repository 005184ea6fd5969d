"""Volume rendering of the field over a white background.

CUDA: nerfacc's occupancy grid (``OccGridEstimator``) marches rays and its packed rendering functions composite.
CPU: nerfacc's marching needs its CUDA extension, so rays are sampled here (uniform steps inside the field's box,
samples in empty grid cells skipped without evaluating the field) and composited with nerfacc's batched functions.
Both share one occupancy grid, updated the same way (occupancy = density * render_step, EMA, threshold).
Lengths along rays are world units; colours linear in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nerfacc
import torch

from backend.device_copies import to_device
from backend.diffusion.cameras import ViewCameras
from backend.nerf.field import RadianceField
from backend.nerf.grid_sampling import visible_samples
from backend.nerf.presets import RendererConfig
from backend.nerf.rays import camera_rays
from backend.nerf.shading import ALBEDO, Lighting, shade
from backend.profiling import region


@dataclass
class RenderOutput:
    """Per ray: ``rgb`` [R, 3] composited on white, ``opacity`` [R], ``normal`` [R, 3] (opacity-weighted, zeros
    where not computed), ``orientation`` [R]: sum of detached weights * max(0, n . d)^2 (the orientation loss term)."""

    rgb: torch.Tensor
    opacity: torch.Tensor
    normal: torch.Tensor
    orientation: torch.Tensor


class VolumeRenderer:
    def __init__(self, config: RendererConfig, radius: float, device: torch.device | str = "cpu",
                 use_nerfacc_sampler: bool | None = None):
        self.config = config
        self.radius = radius
        self.device = torch.device(device)
        r = radius
        self.grid = nerfacc.OccGridEstimator(roi_aabb=[-r, -r, -r, r, r, r], resolution=config.grid_resolution,
                                             levels=1).to(self.device)
        self.use_nerfacc_sampler = self.device.type == "cuda" if use_nerfacc_sampler is None else use_nerfacc_sampler
        if self.device.type == "cuda":  # nerfacc builds its CUDA extension at its first call there: into the cache
            from backend.compile_cache import use_compile_cache

            use_compile_cache()
        self.grid_filled = False
        self.last_sample_count = 0  # field samples of the latest render_rays call (a host int: no sync)
        self.last_marched_count = 0  # CUDA: samples the latest march gave through occupied cells (a host int)
        # Memory (backend.nerf.memory): a step with more samples than ``sample_budget`` evaluates the field in
        # checkpointed chunks of that size; the sampler's no-gradient density queries run ``density_chunk`` at once.
        self.sample_budget: int | None = None
        self.density_chunk: int | None = None

    # -- occupancy grid ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_grid(self, step: int, field: RadianceField, force: bool = False) -> None:
        """Refresh the occupancy grid every ``grid_update_every`` steps (all cells during warm-up), and whenever it
        has never been filled."""
        c = self.config
        if not force and step % c.grid_update_every and self.grid_filled:
            return
        self.grid_filled = True
        with region("grid_update"):
            self._refresh_grid(step, field)

    def _refresh_grid(self, step: int, field: RadianceField) -> None:
        c = self.config
        self.grid.train()  # nerfacc's public update runs in training mode; n=1: the cadence is decided above
        self.grid.update_every_n_steps(step=step, occ_eval_fn=lambda x: field.density(x)[:, None] * c.render_step,
                                       occ_thre=c.grid_occupancy_threshold, ema_decay=c.grid_ema_decay,
                                       warmup_steps=c.grid_warmup_steps, n=1)

    def grid_state(self) -> dict[str, torch.Tensor]:
        return {"occs": self.grid.occs.clone(), "binaries": self.grid.binaries.clone()}

    def load_grid_state(self, state: dict[str, torch.Tensor]) -> None:
        self.grid.occs.copy_(state["occs"])
        self.grid.binaries.copy_(state["binaries"])
        self.grid_filled = True

    # -- rendering -----------------------------------------------------------------------------------------------
    def render_views(self, field: RadianceField, cameras: ViewCameras, height: int, width: int,
                     lighting: Lighting = ALBEDO, stratified: bool = False,
                     generator: torch.Generator | None = None, with_normals: bool | None = None) -> RenderOutput:
        """Render every camera at height x width; outputs reshaped to [N, H, W, ...].

        ``with_normals``: compute normals (orientation term, normal maps); default when training or shading."""
        origins, directions = camera_rays(to_device(cameras.c2w.float(), self.device), cameras.fovy, height, width)
        n = len(cameras)
        light = None
        if lighting.light_positions is not None:
            light = to_device(lighting.light_positions, self.device)[:, None, None, :].expand(n, height, width, 3)
            light = light.reshape(-1, 3)
        if torch.is_grad_enabled():
            out = self.render_rays(field, origins.reshape(-1, 3), directions.reshape(-1, 3), lighting, light,
                                   stratified, generator, with_normals)
        else:
            out = self._render_chunked(field, origins.reshape(-1, 3), directions.reshape(-1, 3), lighting, light,
                                       stratified, generator, with_normals)
        return RenderOutput(out.rgb.reshape(n, height, width, 3), out.opacity.reshape(n, height, width),
                            out.normal.reshape(n, height, width, 3), out.orientation.reshape(n, height, width))

    def _render_chunked(self, field, origins, directions, lighting, light, stratified, generator,
                        with_normals) -> RenderOutput:
        parts = []
        size = self.config.chunk_rays
        for start in range(0, origins.shape[0], size):
            part_light = None if light is None else light[start:start + size]
            parts.append(self.render_rays(field, origins[start:start + size], directions[start:start + size],
                                          lighting, part_light, stratified, generator, with_normals))
        return RenderOutput(*(torch.cat([getattr(p, name) for p in parts]) for name in
                              ("rgb", "opacity", "normal", "orientation")))

    def render_rays(self, field: RadianceField, origins: torch.Tensor, directions: torch.Tensor,
                    lighting: Lighting = ALBEDO, light_positions: torch.Tensor | None = None,
                    stratified: bool = False, generator: torch.Generator | None = None,
                    with_normals: bool | None = None) -> RenderOutput:
        """Render rays (origins, unit directions [R, 3]); ``light_positions`` [R, 3] when the lighting needs it."""
        if with_normals is None:
            with_normals = torch.is_grad_enabled() or lighting.needs_normals
        if self.use_nerfacc_sampler:
            return self._render_packed(field, origins, directions, lighting, light_positions, stratified,
                                       with_normals)
        return self._render_batched(field, origins, directions, lighting, light_positions, stratified, generator,
                                    with_normals)

    def _evaluate(self, field, points, directions, light, lighting, with_normals):
        checkpointed = self.sample_budget is not None and points.shape[0] > self.sample_budget
        return evaluate_samples(field, points, directions, light, lighting, with_normals, checkpointed,
                                self.sample_budget)

    def _render_packed(self, field, origins, directions, lighting, light, stratified, with_normals) -> RenderOutput:
        c = self.config
        n_rays = origins.shape[0]

        def sigma_fn(t_starts, t_ends, ray_indices):
            mid = (t_starts + t_ends)[:, None] / 2.0
            return chunked_density(field, origins[ray_indices] + directions[ray_indices] * mid, self.density_chunk)

        with region("render.sampling"):
            # As the reference's renderer (threestudio NeRFVolumeRenderer with grid_prune and
            # prune_alpha_threshold; docs/reference-fidelity.md): alpha_thre 0.01 with a density query, cone 0, and
            # early termination at transmittance < early_stop_eps (nerfacc's default 1e-4, passed explicitly);
            # nerfacc's OccGridEstimator.sampling with fewer host synchronisations (backend.nerf.grid_sampling).
            ray_indices, t_starts, t_ends, self.last_marched_count = visible_samples(
                self.grid, origins, directions, sigma_fn if c.alpha_threshold > 0 else None, c.render_step,
                stratified, c.alpha_threshold, c.early_stop_eps)
            mid = (t_starts + t_ends)[:, None] / 2.0
            ray_dirs = directions[ray_indices]
            points = origins[ray_indices] + ray_dirs * mid
            sample_light = None if light is None else light[ray_indices]
        self.last_sample_count = points.shape[0]
        with region("render.field"):
            density, colour, normals, orientation = self._evaluate(field, points, ray_dirs, sample_light, lighting,
                                                                   with_normals)
        with region("render.compositing"):
            weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, density, ray_indices=ray_indices,
                                                               n_rays=n_rays)
            acc = lambda values: nerfacc.accumulate_along_rays(weights, values, ray_indices=ray_indices,  # noqa: E731
                                                               n_rays=n_rays)
            rgb = acc(colour)
            opacity = acc(None)[:, 0]
            normal = acc(normals) if normals is not None else torch.zeros_like(rgb)
            if orientation is not None:
                orient = nerfacc.accumulate_along_rays(weights.detach(), orientation[:, None],
                                                       ray_indices=ray_indices, n_rays=n_rays)[:, 0]
            else:
                orient = torch.zeros_like(opacity)
        return RenderOutput(rgb + (1.0 - opacity[:, None]), opacity, normal, orient)

    def _render_batched(self, field, origins, directions, lighting, light, stratified, generator,
                        with_normals) -> RenderOutput:
        with region("render.sampling"):
            ray_id, sample_id, t_starts, t_ends, sample_points, count = self._sample_batched(
                origins, directions, stratified, generator)
        self.last_sample_count = sample_points.shape[0]
        sample_dirs = directions[ray_id]
        sample_light = None if light is None else light[ray_id]
        with region("render.field"):
            density, colour, normals, orientation = self._evaluate(field, sample_points, sample_dirs, sample_light,
                                                                   lighting, with_normals)
        n_rays = origins.shape[0]

        def dense(values: torch.Tensor) -> torch.Tensor:
            out = values.new_zeros((n_rays, count) + tuple(values.shape[1:]))
            return out.index_put((ray_id, sample_id), values)

        with region("render.compositing"):
            weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, dense(density))
            rgb = nerfacc.accumulate_along_rays(weights, dense(colour))
            opacity = nerfacc.accumulate_along_rays(weights, None)[:, 0]
            normal = (nerfacc.accumulate_along_rays(weights, dense(normals)) if normals is not None
                      else torch.zeros_like(rgb))
            if orientation is not None:
                orient = nerfacc.accumulate_along_rays(weights.detach(), dense(orientation)[..., None])[:, 0]
            else:
                orient = torch.zeros_like(opacity)
        return RenderOutput(rgb + (1.0 - opacity[:, None]), opacity, normal, orient)

    def _sample_batched(self, origins, directions, stratified, generator):
        """CPU sampler: uniform steps inside the box, samples in empty grid cells dropped. Returns (ray index,
        sample index) of the kept samples, t_starts / t_ends [R, S], the kept points [K, 3] and S."""
        c = self.config
        n_rays = origins.shape[0]
        device = origins.device
        # Ray / box [-radius, radius]^3 intersection (slab method).
        safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
        t0 = (-self.radius - origins) / safe
        t1 = (self.radius - origins) / safe
        near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
        far = torch.maximum(t0, t1).amin(dim=-1)
        hit = far > near
        longest = float((far - near)[hit].max()) if bool(hit.any()) else 0.0
        count = max(1, min(math.ceil(longest / c.render_step), c.cpu_max_samples))
        step = max(c.render_step, longest / count)
        offset = (torch.rand(n_rays, 1, generator=generator, device=device) if stratified
                  else torch.zeros(n_rays, 1, device=device))
        index = torch.arange(count, device=device, dtype=torch.float32)[None, :]
        t_starts = near[:, None] + (index + offset) * step  # [R, S]
        t_ends = t_starts + step
        mid = (t_starts + t_ends) / 2.0
        points = origins[:, None, :] + directions[:, None, :] * mid[..., None]  # [R, S, 3]
        valid = hit[:, None] & (t_ends <= far[:, None] + 1e-6)
        valid &= self._occupied(points)
        ray_id, sample_id = valid.nonzero(as_tuple=True)
        return ray_id, sample_id, t_starts, t_ends, points[ray_id, sample_id], count

    def _occupied(self, points: torch.Tensor) -> torch.Tensor:
        """Whether points [..., 3] lie in occupied grid cells."""
        res = self.grid.binaries.shape[-1]
        cell = ((points + self.radius) / (2.0 * self.radius) * res).long().clamp(0, res - 1)
        return self.grid.binaries[0][cell[..., 0], cell[..., 1], cell[..., 2]]


def _evaluate_plain(field, points, directions, light, lighting, with_normals):
    density, albedo, normals = field(points, with_normals=with_normals)
    colour = shade(albedo, normals, points, light, lighting)
    orientation = None
    if normals is not None:
        orientation = (normals * directions).sum(dim=-1).clamp(min=0.0) ** 2
    return density, colour, normals, orientation


def evaluate_samples(field: RadianceField, points: torch.Tensor, directions: torch.Tensor,
                     light: torch.Tensor | None, lighting: Lighting, with_normals: bool, checkpointed: bool = False,
                     chunk: int | None = None):
    """Density [S], colour [S, 3], normals [S, 3] or None, orientation term [S] (before weights) of samples.

    ``checkpointed`` (with gradients): the field runs in chunks of ``chunk`` samples under activation
    checkpointing, so the backward keeps only each chunk's inputs and outputs and recomputes the field's
    intermediates; values and gradients equal the plain evaluation's."""
    count = points.shape[0]
    if not checkpointed or not torch.is_grad_enabled() or count == 0:
        return _evaluate_plain(field, points, directions, light, lighting, with_normals)
    from torch.utils.checkpoint import checkpoint

    size = max(int(chunk or count), 1)
    parts = []
    for start in range(0, count, size):
        end = start + size
        parts.append(checkpoint(_evaluate_plain, field, points[start:end], directions[start:end],
                                None if light is None else light[start:end], lighting, with_normals,
                                use_reentrant=False))
    return tuple(None if parts[0][i] is None else torch.cat([part[i] for part in parts]) for i in range(4))


def chunked_density(field: RadianceField, points: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Density [S] at points [S, 3], ``chunk`` points at a time (None: all at once)."""
    if chunk is None or points.shape[0] <= chunk:
        return field.density(points)
    return torch.cat([field.density(points[start:start + chunk]) for start in range(0, points.shape[0], chunk)])

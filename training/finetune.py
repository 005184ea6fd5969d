"""The fine-tuning loop of stage 1 (CLIP image conditioning) and stage 2 (Explicit Multi-view Attention), for one
process or many under torchrun (DDP, data sharded per rank).

One optimizer step consumes a global batch of ``batch_size x grad_accumulation x world_size`` samples (objects);
the loss is the epsilon MSE over the target frames, averaged over the global batch. Only the UNet trains: the VAE
and the image tower stay frozen, and so do the cross-attention's query side (to_q, to_k and the norm before it):
with a one-token context (the CLIP embedding) the softmax is exactly 1 and they do not affect the output (their
gradient is zero, and DDP would otherwise report them as unused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.errors import UserError
from backend.models.configs import DEFAULT_CAMERA_ENCODING
from blender_addon.core.atomic_files import write_json_atomically
from training import distributed
from training.batches import unet_inputs_from_batch
from training.data import (
    RankBatches,
    SampleSettings,
    TrainingSamples,
    cache_fingerprints,
    check_cache,
    check_objects,
    collate_samples,
    describe,
)
from training.lr_schedules import make_scheduler
from training.model_setup import load_stage_model
from training.objective import epsilon_loss, reference_camera
from training.render_records import scan_render_folder
from training.run_checkpoints import (
    MODEL_FILE,
    latest_checkpoint,
    load_training_state,
    restore_rng_states,
    save_run_checkpoint,
)
from training.run_log import RunLog
from training.weight_ema import WeightAverage

PRECISIONS = ("bf16", "fp32")
# Settings a resumed run must share with the run it resumes, or the sample sequence would change.
RESUME_INVARIANTS = ("stage", "seed", "global_batch", "multiview_probability", "condition_drop_probability",
                     "camera_encoding", "tiny")


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run. Batch sizes count objects (samples); LR in the optimizer's units."""

    stage: int
    data: Path
    out: Path
    init: Path | None = None
    tiny: bool = False
    image_encoder: str | None = None
    steps: int = 1000
    batch_size: int = 1  # per process and micro-step
    grad_accumulation: int = 1
    learning_rate: float = 1e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    ema_decay: float | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 0
    seed: int = 0
    multiview_probability: float = 0.7
    condition_drop_probability: float = 0.1
    camera_encoding: str = DEFAULT_CAMERA_ENCODING
    cache: Path | None = None
    skip_incomplete: bool = False
    num_workers: int = 2
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    overfit_one_batch: bool = False  # debugging: train on the first step's batch again and again

    def check(self) -> None:
        problems = [
            (self.stage in (1, 2), "stage must be 1 or 2"),
            (self.steps >= 1, "--steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accumulation >= 1, "--grad-accumulation must be at least 1"),
            (self.learning_rate > 0, "--lr must be positive"),
            (self.warmup_steps >= 0, "--warmup-steps must be 0 or more"),
            (self.checkpoint_every >= 1, "--checkpoint-every must be at least 1"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
            (self.ema_decay is None or 0.0 < self.ema_decay < 1.0, "--ema-decay must be between 0 and 1"),
            (self.num_workers >= 0, "--num-workers must be 0 or more"),
        ]
        for ok, message in problems:
            if not ok:
                raise UserError(message)

    def as_json(self, world_size: int) -> dict:
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        values["world_size"] = world_size
        values["global_batch"] = self.batch_size * self.grad_accumulation * world_size
        return values


def freeze_inert_cross_attention(unet: torch.nn.Module) -> int:
    """Freezes what a one-token context makes inert: each cross-attention's to_q/to_k and the norm2 that feeds
    only its queries (the softmax over one key is 1, so the output is to_out(to_v(context)) whatever the query).
    Returns how many tensors were frozen."""
    frozen = []
    for name, module in unet.named_modules():
        if getattr(module, "attn2", None) is not None:
            frozen += [module.attn2.to_q, module.attn2.to_k, module.norm2]
    count = 0
    for part in frozen:
        for parameter in part.parameters():
            parameter.requires_grad_(False)
            count += 1
    return count


def _check_resume(saved: dict, current: dict, checkpoint: Path) -> None:
    changed = [k for k in RESUME_INVARIANTS if saved.get(k) != current.get(k)]
    if changed:
        details = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise UserError(f"cannot resume {checkpoint}: the run's settings changed ({details}); use another --out")


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(config: FinetuneConfig) -> dict:
    """Runs (or resumes) the fine-tuning; returns {"step", "loss", "checkpoint", "model"} on every rank (``model``:
    the trained MultiViewDiffusionModel, for in-process callers).

    Every check of the input (dataset, checkpoint kind, cache, resume settings) happens before the first step.
    """
    config.check()
    group = distributed.start(config.device)
    try:
        return _train(config, group)
    finally:
        distributed.stop(group)


def _train(config: FinetuneConfig, group: distributed.ProcessGroup) -> dict:
    device = group.device
    if device.type == "cpu":
        # Adam's second moments of tiny gradients become denormal floats, which are 100x slower on CPUs.
        torch.set_flush_denormal(True)
    run_settings = config.as_json(group.world_size)
    sample_settings = SampleSettings(
        seed=config.seed,
        multiview_probability=config.multiview_probability,
        condition_drop_probability=config.condition_drop_probability,
        camera_encoding=config.camera_encoding,
    )
    objects = scan_render_folder(config.data, skip_incomplete=config.skip_incomplete)
    image_size = check_objects(objects, sample_settings)

    out = Path(config.out)
    checkpoint = latest_checkpoint(out)
    state = None
    if checkpoint is not None and not config.resume:
        raise UserError(f"{out} already holds checkpoints (newest {checkpoint.name}): pass --resume, or use another --out")
    if checkpoint is not None:
        state = load_training_state(checkpoint)
        _check_resume(state["run"], run_settings, checkpoint)
        from backend.models.multiview_model import load_checkpoint

        model = load_checkpoint(checkpoint / MODEL_FILE)
    else:
        if config.init is None:
            tiny_hint = "; `iso3d-train init-tiny OUT.safetensors` writes one for --model tiny" if config.tiny else ""
            raise UserError(
                f"--init CKPT is needed to start a run (only --resume of an existing run goes without){tiny_hint}"
            )
        model = load_stage_model(config.stage, config.init, tiny=config.tiny, image_encoder=config.image_encoder)
    if config.cache is not None:
        check_cache(objects, config.cache, cache_fingerprints(model))

    # Frozen parts: only needed on the device when encoding on the fly.
    for frozen in (model.vae, model.image_encoder):
        frozen.eval().requires_grad_(False)
        if config.cache is None:
            frozen.to(device)
    unet = model.unet.to(device).train().requires_grad_(True)
    freeze_inert_cross_attention(unet)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    network = unet
    if group.distributed:
        network = torch.nn.parallel.DistributedDataParallel(
            unet, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
        )
    optimizer = torch.optim.AdamW(
        trainable,
        lr=config.learning_rate,
        betas=tuple(config.adam_betas),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
        foreach=None if device.type == "cuda" else True,  # CPU: one kernel per step, not one per tensor
    )
    scheduler = make_scheduler(optimizer, config.lr_schedule, config.warmup_steps, config.steps)
    weight_average = WeightAverage(unet, config.ema_decay) if config.ema_decay else None
    start_step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if weight_average is not None:
            if state.get("weight_average") is None:
                raise UserError(f"cannot resume {checkpoint}: it was trained without --ema-decay")
            weight_average.load_state_dict(state["weight_average"])
        restore_rng_states(state["rng"])
        start_step = int(state["step"])
    else:
        torch.manual_seed(config.seed + group.rank)

    samples = TrainingSamples(
        objects, sample_settings, image_size, latent_channels=unet.config.in_channels, cache_dir=config.cache
    )
    batches = RankBatches(
        sample_settings, config.batch_size, config.grad_accumulation, group.rank, group.world_size, start_step,
        config.steps, repeat_first_step=config.overfit_one_batch,
    )
    loader = torch.utils.data.DataLoader(
        samples,
        batch_sampler=batches,
        collate_fn=collate_samples,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, start_step, config.steps, enabled=group.is_main, progress=config.progress)
    if group.is_main:
        write_json_atomically(out / "run.json", run_settings)
        origin = f"resuming {checkpoint} at step {start_step}" if state else f"from {config.init}"
        log.message(
            f"iso3d-train: stage {config.stage}, {describe(objects)}, {group.world_size} process(es) on {device.type}, "
            f"global batch {batches.global_batch}, steps {config.steps}, {origin}"
        )
    reference_code = reference_camera(config.camera_encoding).to(device) if config.stage == 2 else None

    summary = {"step": start_step, "loss": None, "checkpoint": str(checkpoint) if checkpoint else None}
    micro_batches = iter(loader)
    try:
        for step in range(start_step, config.steps):
            started = time.perf_counter()
            step_loss = torch.zeros((), device=device)
            target_views = 0
            for micro in range(config.grad_accumulation):
                batch = next(micro_batches)
                inputs = unet_inputs_from_batch(model, batch, config.stage, device, reference_code)
                target_views = int(batch["cameras"].shape[1])
                last = micro == config.grad_accumulation - 1
                sync = network.no_sync() if group.distributed and not last else contextlib.nullcontext()
                with sync:
                    with _autocast(device, config.precision):
                        prediction = network(
                            inputs.x, inputs.timesteps, context=inputs.context, camera=inputs.camera,
                            num_frames=inputs.num_frames,
                        )
                    loss = epsilon_loss(prediction, inputs)
                    (loss / config.grad_accumulation).backward()
                step_loss += loss.detach() / config.grad_accumulation
            grad_norm = None
            if config.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            learning_rate = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if weight_average is not None:
                weight_average.update(unet)
            loss_value = float(distributed.mean_over_ranks(step_loss, group))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            entry = {
                "step": step,
                "loss": loss_value,
                "lr": learning_rate,
                "target_views": target_views,
                "samples_per_s": batches.global_batch / seconds,
            }
            if grad_norm is not None:
                entry["grad_norm"] = float(grad_norm)
            if device.type == "cuda":
                entry["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            log.step(entry)
            summary.update(step=step + 1, loss=loss_value)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                if group.is_main:
                    training_state = {
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "weight_average": weight_average.state_dict() if weight_average else None,
                        "run": run_settings,
                    }
                    saved = save_run_checkpoint(out, step + 1, model, training_state, weight_average,
                                                config.keep_checkpoints)
                    log.message(f"iso3d-train: saved {saved}")
                    summary["checkpoint"] = str(saved)
                distributed.barrier(group)
    finally:
        log.close()
    if summary["checkpoint"] is None:
        summary["checkpoint"] = str(latest_checkpoint(out))
    summary["model"] = model.eval()
    return summary

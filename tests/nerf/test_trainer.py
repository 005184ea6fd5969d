"""The generation loop with the real tiny model: every event type, resume determinism, cancel, bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from backend.commands import generate as command
from backend.events import EVENT_TYPES, Done, Failed, MeshUpdate, Progress, Queued, Views
from backend.nerf.trainer import CHECKPOINT_NAME, LATEST_MESH_NAME, SDSTrainer, generate
from tests.helpers.targets import coarse_render_config, small_config


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def image():
    return command.load_condition_image("examples/example.png")


def full_run_config():
    return coarse_render_config(4, run__mesh_every=2, run__views_every=2, run__checkpoint_every=2,
                                mesh__density_threshold=2.0)


@pytest.fixture(scope="module")
def full_run(model, image, tmp_path_factory):
    """(events, work folder) of one uninterrupted 4-step run with meshes, views and checkpoints every 2 steps: the
    events test reads it, and the resume test compares its split run with this run's final checkpoint."""
    workdir = tmp_path_factory.mktemp("full_run")
    return list(generate(model, full_run_config(), workdir, image=image)), workdir


def test_a_run_yields_every_event_type_and_writes_outputs(full_run):
    events, workdir = full_run
    kinds = {type(e) for e in events}
    assert kinds == set(EVENT_TYPES) - {Failed, Queued}  # Queued comes from the service's queue, not a job
    progress = [e for e in events if isinstance(e, Progress) and e.phase == "sds"]
    assert [p.step for p in progress] == [1, 2, 3, 4] and all(p.total == 4 for p in progress)
    assert all(np.isfinite(p.losses["loss"]) and p.eta is not None and p.elapsed > 0 for p in progress)
    views = [e for e in events if isinstance(e, Views)]
    assert views[0].images.shape == (4, 24, 24, 3) and views[0].images.dtype == np.uint8
    assert views[0].c2w.shape == (4, 4, 4) and views[0].kind == "render"
    meshes = [e for e in events if isinstance(e, MeshUpdate)]
    assert meshes[-1].final and not meshes[0].final and meshes[0].step == 2
    final = meshes[-1]
    assert final.vertices.dtype == np.float32 and final.faces.dtype == np.int32 and final.vertex_colors.dtype == np.uint8
    assert trimesh.Trimesh(final.vertices, final.faces).volume > 0  # wound outward
    done = events[-1]
    assert isinstance(done, Done)
    for name in ("mesh.glb", "mesh.obj", "mesh.ply", "turntable.png", CHECKPOINT_NAME):
        assert (workdir / name).is_file(), name
    assert (workdir / LATEST_MESH_NAME).is_file()
    ply = trimesh.load(workdir / "mesh.ply")
    assert np.allclose(np.sort(ply.vertices[:, 2]), np.sort(final.vertices[:, 2]), atol=1e-5)  # PLY keeps Z up
    glb = trimesh.load(workdir / "mesh.glb", force="mesh")
    assert np.allclose(np.sort(glb.vertices[:, 1]), np.sort(final.vertices[:, 2]), atol=1e-5)  # GLB is Y up
    assert Image.open(workdir / "turntable.png").size == (2 * 24, 24)


def test_resume_continues_to_the_same_result(model, image, full_run, tmp_path):
    config = full_run_config()  # the uninterrupted run's settings: meshes and views at step 2 on both sides
    context = model.encode_image(image).float()
    cancel_after_two = threading.Event()
    first = SDSTrainer(config, model, context, tmp_path / "split")
    # The first part pipelined, as on CUDA (the CPU runs it so when asked): step k is reported once step k + 1 is
    # queued, except on a boundary (views, a mesh, a checkpoint at step 2 here), whose work takes the state with
    # nothing queued after it; the cancel then stops at that step, and the resumed run must end where the
    # unpipelined one did.
    first.pipelined = True
    events, queued = [], []
    for event in first.run(cancel=cancel_after_two):
        events.append(event)
        queued.append(first.step)
        if isinstance(event, Progress) and event.step == 2:
            cancel_after_two.set()
    progress = [(e.step, steps) for e, steps in zip(events, queued) if isinstance(e, Progress)]
    assert progress == [(1, 2), (2, 2)]  # step 1 reported with step 2 queued; step 2 a boundary
    assert [(e.step, steps) for e, steps in zip(events, queued) if isinstance(e, Views)] == [(2, 2)]
    assert isinstance(events[-1], Failed) and events[-1].code == "cancelled" and "at step 2" in events[-1].message
    resumed = list(generate(model, config, tmp_path / "split", resume=True))
    assert isinstance(resumed[-1], Done)
    assert [e.step for e in resumed if isinstance(e, Progress) and e.phase == "sds"] == [3, 4]
    state = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    whole = torch.load(full_run[1] / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == whole["step"] == 4 and state["field"].keys() == whole["field"].keys()
    for name, value in whole["field"].items():
        assert torch.equal(state["field"][name], value), name
    assert torch.equal(state["grid"]["binaries"], whole["grid"]["binaries"])


def test_step_losses_read_as_a_mapping_and_a_non_finite_loss_raises_when_read():
    from backend.nerf.trainer import GenerationError, StepLosses

    def failure(step, value):
        return GenerationError("nan_loss", f"the loss became {value} at step {step}")

    losses = StepLosses(7, torch.tensor([1.5, 0.5, 0.25, 980.0]), failure)
    assert dict(losses) == {"loss": 1.5, "sds": 0.5, "orient": 0.25, "t": 980.0} and losses["t"] == 980.0
    broken = StepLosses(8, torch.tensor([float("nan"), 0.5, 0.0, 20.0]), failure)  # built without raising ...
    with pytest.raises(GenerationError, match="at step 8"):  # ... raising where the values are read
        broken["sds"]


def test_nan_loss_fails_clearly_and_keeps_the_last_good_checkpoint(model, image, tmp_path):
    config = coarse_render_config(4, run__mesh_every=0, run__views_every=0, run__checkpoint_every=2)
    trainer = SDSTrainer(config, model, model.encode_image(image).float(), tmp_path)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, Progress) and event.step == 3:  # after the checkpoint of step 2
            with torch.no_grad():  # a diverged optimiser state: the next loss is NaN
                trainer.field.encoding.table.fill_(float("nan"))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.code == "nan_loss"
    assert "at step 3" in failed.message and "(step 2)" in failed.message and str(tmp_path) in failed.message
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 2 and torch.isfinite(state["field"]["encoding.table"]).all()


def test_out_of_memory_becomes_a_clear_failure(model, image, tmp_path, monkeypatch):
    # A CPU cannot run out of GPU memory; the renderer raises the error CUDA would raise.
    config = coarse_render_config(2, run__mesh_every=0, run__views_every=0)
    trainer = SDSTrainer(config, model, model.encode_image(image).float(), tmp_path)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(trainer.renderer, "render_views", out_of_memory)
    events = list(trainer.run())
    assert isinstance(events[-1], Failed) and events[-1].code == "out_of_memory"
    assert "draft" in events[-1].message


@pytest.mark.parametrize("setting, value", [("run.steps", 0), ("phases.resolution_after", -64),
                                            ("mesh.resolution", 0), ("cameras.fovy_range", "0,200")])
def test_impossible_settings_are_refused_by_name(setting, value, tmp_path):
    with pytest.raises(ValueError, match=setting.replace(".", r"\.")):
        config = small_config()
        from backend.nerf.presets import set_option, validate

        set_option(config, setting, value)
        validate(config)


def _cli(*argv):
    from backend.cli import main as iso3d

    return iso3d(["generate", *map(str, argv)])


def test_cli_bad_inputs_give_clear_errors(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases = [
        ((tmp_path / "missing.png", "--model", "tiny"), "does not exist"),
        ((corrupt, "--model", "tiny"), "not an image PIL can read"),
        (("examples/example.png", "--model", "tiny", "--steps", "0"), "setting 'run.steps' must be between 1 and"),
        (("examples/example.png", "--model", "tiny", "--phases.resolution_after", "-8"), "resolution_after"),
        (("examples/example.png", "--model", "tiny", "--out", tmp_path / "a.fbx"), ".glb, .obj or .ply"),
        (("--resume", tmp_path / "nothing", "--model", "tiny"), "cannot resume"),
    ]
    for argv, message in cases:
        assert _cli(*argv) == command.EXIT_BAD_INPUT
        assert message in capsys.readouterr().err


# slow: two CLI runs (~4 s); the default run keeps the resume test above and one real `iso3d generate` subprocess
@pytest.mark.slow
def test_cli_generates_and_resumes(tmp_path, capsys):
    out = tmp_path / "asset.obj"
    # small renders, mesh and turntable: this test checks the command's files, refusal and resume, not their sizes
    common = ("--model", "tiny", "--device", "cpu", "--preset", "tiny", "--quiet", "--out", out,
              "--phases.resolution_before", "24", "--phases.resolution_after", "24", "--mesh.resolution", "32",
              "--mesh.density_threshold", "2", "--run.turntable_views", "2", "--run.views_resolution", "24")
    assert _cli("examples/example.png", "--steps", "2", *common) == command.EXIT_OK
    assert out.is_file() and (tmp_path / "asset_turntable.png").is_file()
    job = tmp_path / "asset.job"
    # The same work folder again without --resume is refused (nothing is overwritten) ...
    assert _cli("examples/example.png", "--steps", "2", *common) == command.EXIT_BAD_INPUT
    assert "--resume" in capsys.readouterr().err
    # ... and --resume with more steps continues from step 2.
    assert _cli("--resume", job, "--steps", "3", *common) == command.EXIT_OK
    assert torch.load(job / CHECKPOINT_NAME, weights_only=True)["step"] == 3

"""The trainer's background work (backend.nerf.between_steps) with the real tiny model: a checkpoint written in the
background is the state of the step it was taken at, is on disk whenever something needs it, and a failed write is
a clear Failed event; intermediate meshes come in step order and equal the synchronous extraction."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch

from backend.commands import generate as command
from backend.events import Failed, MeshUpdate, Progress
from backend.nerf.trainer import CHECKPOINT_NAME, LATEST_MESH_NAME, SDSTrainer
from blender_addon.core.atomic_files import PARTIAL_SUFFIX
from tests.helpers.targets import coarse_render_config, small_config


@pytest.fixture(scope="module")
def context(tiny_model):
    return tiny_model.encode_image(command.load_condition_image("examples/example.png")).float()


def assert_same_state(saved, expected, where: str = "state") -> None:
    """Every tensor equal bit for bit, every other value equal, the same keys."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(saved, torch.Tensor) and saved.dtype == expected.dtype, where
        assert torch.equal(saved, expected.cpu()), where
    elif isinstance(expected, dict):
        assert set(saved) == set(expected), where
        for key in expected:
            assert_same_state(saved[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(saved) == len(expected), where
        for index, (a, b) in enumerate(zip(saved, expected)):
            assert_same_state(a, b, f"{where}/{index}")
    else:
        assert saved == expected, where


def no_partial_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(PARTIAL_SUFFIX)]


# slow: two runs (~5 s); the default run keeps the cancel, close and failed-write tests of the same writer
@pytest.mark.slow
def test_a_background_checkpoint_is_the_synchronous_state_of_its_step(tiny_model, context, tmp_path):
    config = small_config(steps=4, run__mesh_every=0, run__views_every=0, run__checkpoint_every=0)
    background = SDSTrainer(config, tiny_model, context, tmp_path / "background")
    synchronous = SDSTrainer(config, tiny_model, context, tmp_path / "synchronous")
    for trainer in (background, synchronous):
        trainer.train_step()
        trainer.train_step()
    background.save_checkpoint(wait=False)
    assert background.last_checkpoint_step in (None, 2)  # names a step only once its file is on disk
    with torch.no_grad():  # the weights change in place at once, while the write has only begun
        background.field.encoding.table.add_(1.0)
    background.train_step()
    background.wait_for_checkpoint()
    assert background.last_checkpoint_step == 2
    reference = io.BytesIO()  # what the synchronous save wrote: torch.save of the state at the boundary
    torch.save(synchronous.state_dict(), reference)
    reference.seek(0)
    saved = torch.load(tmp_path / "background" / CHECKPOINT_NAME, weights_only=True)
    assert_same_state(saved, torch.load(reference, weights_only=True))
    assert no_partial_files(tmp_path / "background")


def test_a_cancel_right_after_a_checkpoint_step_finds_the_file_complete(tiny_model, context, tmp_path):
    config = coarse_render_config(steps=6, run__mesh_every=0, run__views_every=0, run__checkpoint_every=2)
    trainer = SDSTrainer(config, tiny_model, context, tmp_path)
    cancel = threading.Event()
    for event in trainer.run(cancel=cancel):
        if isinstance(event, Progress) and event.step == 2:
            cancel.set()  # the step-2 checkpoint is handed to its thread after this event
        if isinstance(event, Failed):
            assert event.code == "cancelled"
            # read while the run is still open: the file is whole, of the cancelled step, and nothing is partial
            assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 2
            assert trainer.last_checkpoint_step == 2 and no_partial_files(tmp_path)
    assert isinstance(event, Failed)


def test_a_run_closed_after_a_checkpoint_step_leaves_the_file_written(tiny_model, context, tmp_path):
    # The service closes a job's generator when it stops reading it: the write in flight still ends on disk.
    config = coarse_render_config(steps=6, run__mesh_every=0, run__views_every=0, run__checkpoint_every=2)
    trainer = SDSTrainer(config, tiny_model, context, tmp_path)
    events = trainer.run()
    for event in events:
        if isinstance(event, Progress) and event.step == 3:
            break
    events.close()
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 2
    assert no_partial_files(tmp_path)


def test_a_failed_background_write_is_a_clear_failure_and_leaves_nothing_half_written(tiny_model, context,
                                                                                       tmp_path):
    config = coarse_render_config(steps=4, run__mesh_every=0, run__views_every=0, run__checkpoint_every=2)
    blocker = tmp_path / CHECKPOINT_NAME  # a folder where the checkpoint goes: the rename over it fails
    blocker.mkdir()
    (blocker / "kept.txt").write_text("not a checkpoint")
    events = list(SDSTrainer(config, tiny_model, context, tmp_path).run())
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.code == "checkpoint_failed", failed
    assert str(blocker) in failed.message and "no checkpoint had been written yet" in failed.message
    assert len(failed.message.splitlines()) == 1
    assert (blocker / "kept.txt").read_text() == "not a checkpoint" and no_partial_files(tmp_path)
    # reported at a boundary once the write has ended (a step later, or at the next save): before the final mesh
    assert not any(isinstance(e, MeshUpdate) for e in events)


# slow: two runs (~7 s); the default run keeps the trainer's mesh events and the background-checkpoint tests
@pytest.mark.slow
def test_intermediate_meshes_come_in_step_order_and_equal_the_synchronous_extraction(tiny_model, context,
                                                                                     tmp_path):
    config = small_config(steps=5, run__mesh_every=1, run__views_every=0, run__checkpoint_every=0,
                          mesh__density_threshold=2.0)
    events = list(SDSTrainer(config, tiny_model, context, tmp_path / "background").run())
    meshes = [e for e in events if isinstance(e, MeshUpdate) and not e.final]
    assert [m.step for m in meshes] == [1, 2, 3, 4]  # the last step has the final mesh instead
    position = {id(e): i for i, e in enumerate(events)}
    final_at = next(i for i, e in enumerate(events) if isinstance(e, MeshUpdate) and e.final)
    assert max(position[id(m)] for m in meshes) < final_at
    for mesh in meshes:  # after the Progress of its step
        progress_at = next(i for i, e in enumerate(events) if isinstance(e, Progress) and e.step == mesh.step)
        assert position[id(mesh)] > progress_at
    synchronous = SDSTrainer(config, tiny_model, context, tmp_path / "synchronous")
    for mesh in meshes:
        synchronous.train_step()
        expected = synchronous.extract_mesh(config.mesh.preview_resolution)
        assert np.array_equal(mesh.vertices, expected.vertices), mesh.step
        assert np.array_equal(mesh.faces, expected.faces), mesh.step
        assert np.array_equal(mesh.vertex_colors, expected.vertex_colors), mesh.step
    import trimesh

    latest = trimesh.load(tmp_path / "background" / LATEST_MESH_NAME)
    assert len(latest.vertices) == len(meshes[-1].vertices)  # the file is the last intermediate mesh's


def test_joining_the_work_in_flight_waits_for_it_and_leaves_its_result_to_collect():
    from backend.nerf.between_steps import OneInFlight

    work = OneInFlight("join")
    work.join()  # nothing in flight: returns at once
    gate, finished = threading.Event(), threading.Event()

    def task():
        gate.wait()
        finished.set()
        return "mesh"

    work.submit(task)
    assert not work.ready()
    threading.Thread(target=gate.set).start()
    work.join()
    assert finished.is_set() and work.ready() and work.pending  # ended, not collected
    assert work.wait() == "mesh" and not work.pending

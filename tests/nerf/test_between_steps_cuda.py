"""On CUDA (marked ``gpu``): the background work's device side. A checkpoint snapshot lands in pinned host buffers
that are reused from one snapshot to the next and equal the state bit for bit; a background mesh is the mesh of the
field as it was at ``start``, although the field changes in place right after (the copy is ordered before it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.nerf.between_steps import BackgroundMesh, StateSnapshot
from backend.nerf.field import RadianceField
from backend.nerf.mesh import extract_mesh
from tests.helpers.targets import small_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")


def trained_field():
    config = small_config()
    torch.manual_seed(0)
    field = RadianceField(config.field).to(DEVICE)
    optimizer = torch.optim.AdamW(field.parameters())
    points = torch.rand(4096, 3, device=DEVICE) - 0.5
    field.density(points).sum().backward()
    optimizer.step()
    return config, field, optimizer


def test_snapshots_are_pinned_reused_and_equal_to_the_state():
    _, field, optimizer = trained_field()
    snapshots = StateSnapshot()
    first = snapshots.take({"field": field.state_dict(), "optimizer": optimizer.state_dict()}, DEVICE)
    table = first["field"]["encoding.table"]
    assert table.is_pinned() and torch.equal(table, field.encoding.table.detach().cpu())
    with torch.no_grad():
        field.encoding.table.add_(1.0)
    second = snapshots.take({"field": field.state_dict(), "optimizer": optimizer.state_dict()}, DEVICE)
    assert second["field"]["encoding.table"].data_ptr() == table.data_ptr()  # the same host buffer, refilled
    assert torch.equal(second["field"]["encoding.table"], field.encoding.table.detach().cpu())
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(second["optimizer"]["state"][index][name], value.cpu()), (index, name)


def test_a_background_mesh_is_the_field_at_its_start(tmp_path):
    config, field, _ = trained_field()
    m = config.mesh
    m.density_threshold = 2.0
    reference = RadianceField(config.field).to(DEVICE)
    reference.load_state_dict(field.state_dict())
    expected = extract_mesh(reference, m.preview_resolution, m.density_threshold, m.min_component_fraction,
                            m.chunk_points)
    assert not expected.is_empty
    meshes = BackgroundMesh(tmp_path / "mesh_latest.ply")
    meshes.start(field, config.field, m, step=7)
    with torch.no_grad():  # the next step's update, queued right after the start
        for parameter in field.parameters():
            parameter.mul_(-3.0)
    event = meshes.collect(wait=True)
    assert event.step == 7 and (tmp_path / "mesh_latest.ply").is_file()
    assert np.array_equal(event.vertices, expected.vertices) and np.array_equal(event.faces, expected.faces)
    assert np.array_equal(event.vertex_colors, expected.vertex_colors)

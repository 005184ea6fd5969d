"""Field normals (analytic vs the autograd reference and finite differences), compiled vs plain field, mesh
extraction and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from backend.nerf import field as field_module
from backend.nerf.field import RadianceField
from backend.nerf.mesh import Mesh, export_mesh, extract_mesh
from backend.nerf.presets import FieldConfig
from tests.helpers.field_runs import values_and_gradients, varied_field
from tests.helpers.targets import SPHERE_CENTRE, SPHERE_RADIUS, SphereTarget, chamfer_distance, small_config, \
    sphere_surface_points


def test_finite_difference_normals_match_analytic_ones():
    config = small_config().field
    torch.manual_seed(0)
    field = RadianceField(config)
    points = torch.rand(2000, 3) * 1.2 - 0.6
    field.config.normals = "analytic"
    _, _, analytic = field(points, with_normals=True)
    field.config.normals = "finite_difference"
    _, _, finite = field(points, with_normals=True)
    cosine = (analytic * finite).sum(dim=-1)
    assert cosine.median() > 0.999 and (cosine > 0.95).float().mean() > 0.97


@pytest.mark.parametrize("published_size", [False, True])
def test_analytic_normals_equal_the_autograd_reference_in_value_and_gradient(published_size):
    """The one-pass analytic normals (hash-grid weights differentiated in closed form, carried through the MLP in
    reverse mode as d raw / d features) against -grad density from autograd's double backward: same density,
    albedo, normals, and the same parameter gradients of a loss on all three (the orientation and shading losses
    backpropagate through normals)."""
    config = small_config().field
    if published_size:  # 16 levels up to ~4096 cells, hashed levels, 64-wide MLP (FieldConfig's defaults)
        from backend.nerf.presets import FieldConfig

        config = FieldConfig(log2_hashmap_size=15, compile=False)
    torch.manual_seed(1)
    field = RadianceField(config).double()
    with torch.no_grad():  # features large enough that ReLUs switch and normals vary from point to point
        field.encoding.table.uniform_(-1.0, 1.0)
    generator = torch.Generator().manual_seed(2)
    points = (torch.rand(3000, 3, generator=generator, dtype=torch.float64) * 2.4 - 1.2)  # some outside the box
    weights = torch.randn(3000, 3, generator=generator, dtype=torch.float64)

    def run(mode):
        field.config.normals = mode
        field.zero_grad()
        density, albedo, normals = field(points, with_normals=True)
        loss = (density.sin() + albedo.sum(-1) + (normals * weights).sum(-1) ** 2).sum()
        loss.backward()
        return [density, albedo, normals] + [p.grad.clone() for p in field.parameters()]

    analytic, reference = run("analytic"), run("autograd")
    assert reference[2].abs().sum() > 0 and reference[3].abs().sum() > 0
    for ours, theirs in zip(analytic, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_float16_mlps_give_float32_outputs_near_the_float32_field_and_float32_gradients():
    """``mlp_autocast_dtype`` (the trainer's float16 MLPs on CUDA under ``run.mixed_precision``): outputs stay
    float32 and within float16 rounding of the float32 field, and the parameters' gradients stay float32 (the
    optimiser's master weights). CPU autocast runs the same float16 matmuls as CUDA's."""
    torch.manual_seed(1)
    field = RadianceField(small_config().field)
    with torch.no_grad():  # features large enough that the MLPs' outputs and the normals vary
        field.encoding.table.uniform_(-1.0, 1.0)
    points = (torch.rand(3000, 3, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8)
    plain = field(points, with_normals=True)
    field.mlp_autocast_dtype = torch.float16
    half = field(points, with_normals=True)
    assert all(value.dtype == torch.float32 for value in half)
    density, albedo, normals = half
    # float16 keeps 11 significant bits (relative rounding 2^-11 ~ 5e-4 a value); through two 64-wide layers the
    # sums' rounding stays a few times that
    torch.testing.assert_close(density, plain[0], rtol=5e-3, atol=1e-3)
    torch.testing.assert_close(albedo, plain[1], rtol=0, atol=2e-3)
    angle = torch.rad2deg(torch.acos((normals * plain[2]).sum(dim=-1).clamp(-1.0, 1.0)))
    # the direction of a near-zero gradient is ill-conditioned, so a few points turn more than the rest
    assert angle.median() < 0.1 and torch.quantile(angle, 0.99) < 1.0 and angle.max() < 10.0
    assert not torch.equal(density, plain[0])  # the float16 path really ran
    (density.sum() + albedo.sum() + normals[:, 0].sum()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in field.parameters())


def test_the_reverse_mode_input_gradient_is_autograds_for_any_depth():
    """``mlp_forward_and_input_gradient`` against ``torch.autograd.grad`` of the MLP's one output: no hidden layer,
    one (the reference's) and two, in float64 (equal up to summation order)."""
    generator = torch.Generator().manual_seed(5)
    for hidden_layers in (0, 1, 2):
        network = field_module.mlp(12, 1, 16, hidden_layers).double()
        inputs = torch.randn(300, 12, generator=generator, dtype=torch.float64).requires_grad_(True)
        outputs, gradient = field_module.mlp_forward_and_input_gradient(network, inputs)
        (expected,) = torch.autograd.grad(network(inputs).sum(), inputs)
        torch.testing.assert_close(outputs, network(inputs), rtol=1e-12, atol=1e-12)
        assert gradient.shape == inputs.shape
        torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="one output"):
        field_module.mlp_forward_and_input_gradient(field_module.mlp(12, 3, 16, 1), torch.randn(4, 12))


def test_the_mlps_on_bucketed_rows_give_the_fields_values_and_gradients(monkeypatch):
    """The MLPs on rows zero-padded to a multiple of the device's bucket and cut back (``MLP_ROW_BUCKET``; on the
    CPU only here, where it is off in a run): each row's outputs depend on that row alone, so the density, albedo,
    normals and parameter gradients are the same (float32; the padded products may block their sums differently,
    hence float32 rounding's tolerance), and the MLPs did see the padded rows."""
    field = varied_field(5)
    points = torch.rand(3001, 3) * 1.6 - 0.8  # not a multiple of the bucket
    weights = torch.randn(3001, 3)

    def run():
        return values_and_gradients(field, points, weights)

    assert field_module.MLP_ROW_BUCKET.get("cpu", 1) == 1  # off on the CPU
    expected = run()
    rows_seen = []
    linear_forward = torch.nn.Linear.forward

    def spy(layer, inputs):
        rows_seen.append(inputs.shape[0])
        return linear_forward(layer, inputs)

    monkeypatch.setitem(field_module.MLP_ROW_BUCKET, "cpu", 1024)
    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    got = run()
    assert rows_seen and all(rows == 3072 for rows in rows_seen), rows_seen
    assert [value.shape for value in got] == [value.shape for value in expected]
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)


# slow: torch.compile of the field on the CPU (~30-90 s); the compiled field runs on CUDA, where the GPU benchmarks
# and tests/nerf/test_memory_cuda.py use it
@pytest.mark.slow
def test_compiled_field_equals_the_plain_torch_field():
    torch.manual_seed(0)
    field = RadianceField(small_config().field)
    points = torch.rand(4096, 3) * 2 - 1
    plain_density, plain_albedo, _ = field(points)
    field.use_compiled()
    density, albedo, _ = field(points)
    assert torch.allclose(density, plain_density, rtol=1e-5, atol=1e-5)
    assert torch.allclose(albedo, plain_albedo, rtol=1e-5, atol=1e-6)


# slow: Dynamo traces the field (~4 s on the 2-core CI machine; the unit lane keeps to a minute)
@pytest.mark.slow
@pytest.mark.parametrize("row_bucket", [1, 256])  # the MLPs' rows as they are, and padded (CUDA's way)
def test_the_field_is_compiled_once_for_any_sample_count_with_every_other_size_fixed(row_bucket, monkeypatch):
    monkeypatch.setitem(field_module.MLP_ROW_BUCKET, "cpu", row_bucket)
    # a real torch.compile backend that keeps what Dynamo hands it (the graph runs as traced)
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append([tuple(node.meta["example_value"].shape) for node in graph_module.graph.find_nodes(op="placeholder")
                       if isinstance(node.meta.get("example_value"), torch.Tensor)])  # the traced (symbolic) shapes
        return graph_module.forward

    torch.manual_seed(0)
    config = FieldConfig(levels=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=1.5)  # little to trace
    field, plain = RadianceField(config), RadianceField(config)
    plain.load_state_dict(field.state_dict())
    field.use_compiled(backend=recording_backend)
    for count in (300, 517, 1024):
        points = torch.rand(count, 3) * 2 - 1
        for compiled_out, plain_out in ((field(points, with_normals=True), plain(points, with_normals=True)),
                                        ((field.density(points),), (plain.density(points),))):
            for value, expected in zip(compiled_out, plain_out):
                assert torch.equal(value, expected)
    assert len(graphs) == 2  # the density and the evaluation with normals, each once for the three counts
    for shapes in graphs:
        symbolic = [shape for shape in shapes if any(isinstance(size, torch.SymInt) for size in shape)]
        # the points [N, 3]: N symbolic, the 3 coordinates (and every weight's size) fixed, so a reduction over the
        # coordinates can be unrolled
        assert len(symbolic) == 1 and len(symbolic[0]) == 2, shapes
        assert isinstance(symbolic[0][0], torch.SymInt) and symbolic[0][1] == 3 and isinstance(symbolic[0][1], int)


def test_extracted_mesh_is_outward_clean_and_coloured():
    target = SphereTarget()
    mesh = extract_mesh(target, 48, threshold=30.0, min_component_fraction=0.01)
    shape = trimesh.Trimesh(mesh.vertices, mesh.faces)
    assert shape.is_watertight and shape.volume > 0
    assert abs(shape.volume - 4 / 3 * np.pi * SPHERE_RADIUS**3) < 0.05 * shape.volume
    assert chamfer_distance(mesh.vertices, sphere_surface_points()) < 0.02  # ~ the 4000 points' spacing
    red = mesh.vertices[:, 0] > SPHERE_CENTRE[0] + 0.02
    assert (mesh.vertex_colors[red, 0] > 200).all() and (mesh.vertex_colors[~red & (mesh.vertices[:, 0] <
                                                         SPHERE_CENTRE[0] - 0.02), 2] > 200).all()


class TwoBlobs(SphereTarget):
    """The sphere plus a tiny floater far from it."""

    def density(self, points):
        floater = self.peak * torch.sigmoid((0.06 - (points - torch.tensor([-0.8, 0.8, 0.8])).norm(dim=-1)) * 60)
        return torch.maximum(super().density(points), floater)


def test_small_floating_components_are_dropped():
    kept = extract_mesh(TwoBlobs(), 48, threshold=30.0, min_component_fraction=0.0)
    cleaned = extract_mesh(TwoBlobs(), 48, threshold=30.0, min_component_fraction=0.05)
    assert len(trimesh.Trimesh(kept.vertices, kept.faces).split(only_watertight=False)) == 2
    assert len(trimesh.Trimesh(cleaned.vertices, cleaned.faces).split(only_watertight=False)) == 1


def test_empty_field_gives_an_empty_mesh_and_export_refuses_unknown_formats(tmp_path):
    mesh = extract_mesh(SphereTarget(peak=1.0), 16, threshold=30.0)
    assert mesh.is_empty
    with pytest.raises(ValueError, match="mesh formats"):
        export_mesh(Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.int32),
                         np.zeros((3, 3), np.uint8)), tmp_path / "a.fbx")

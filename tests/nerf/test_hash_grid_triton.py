"""The fused Triton hash-grid encoding against the torch HashGrid (the reference), wherever both run.

On a machine without CUDA the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here before
anything imports the kernels); with CUDA they are compiled for the GPU and the same tests compare them with the
torch path there. The grids are small (2-3 levels, one dense and the others hashed) because the interpreter
runs each program's operations one by one in Python: a launch costs it about half a second a level, so these
tests take ~25 s on a busy 2-core machine (10 s of CPU) and are marked ``slow`` there (``-m slow`` runs them); on a
CUDA machine they take well under a second and run in the unit lane (marked ``gpu``), with two more at the
published size and through torch.compile.

Tolerances, all from float32 summation order (both paths compute the same positions, corners, indices and weights
with the same float32 operations, no fused multiply-add; they add the 8 corners' terms in another order):
- features and gradient rows: 8 terms, so at most ~8 float32 ulps of the terms' size: atol 2e-6 x the largest
  magnitude (gradient rows are scaled by the level's resolution, so their magnitudes reach hundreds);
- the table gradient: an entry sums the terms of every point that touches it (all of them on the coarse level),
  in the order the atomic adds land: atol 1e-5 x the largest entry.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # tests/conftest.py sets it before triton is imported; here as well

from backend.errors import SettingsError
from backend.nerf.field import HashGrid, RadianceField
from backend.nerf.hash_grid_triton import TRITON_INSTALLED
from backend.nerf.presets import FieldConfig, fast

pytestmark = pytest.mark.skipif(not TRITON_INSTALLED, reason="triton is not installed (the dev extra brings it)")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# The tests that run the kernels: the interpreter makes them slow on a CPU machine.
runs_kernels = pytest.mark.gpu if DEVICE.type == "cuda" else pytest.mark.slow
needs_cuda = pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device (the published size)")
# levels 0..2 at scales 4, 9, 19 (x * scale + 0.5 in [0.5, scale + 0.5]): level 0's 6^3 vertices fit the 512-row
# table (dense), 11^3 and 21^3 do not (hashed); scale 4 puts level 0's cell boundaries exactly on float32 values
GRID = dict(levels=3, features_per_level=2, log2_hashmap_size=9, base_resolution=5, per_level_scale=2.0)


def grids(features_per_level: int = 2, levels: int = 3) -> tuple[HashGrid, HashGrid]:
    settings = dict(GRID, features_per_level=features_per_level, levels=levels)
    reference = HashGrid(**settings, encoding="torch").to(DEVICE)
    fused = HashGrid(**settings, encoding="triton").to(DEVICE)
    with torch.no_grad():  # values of order 1, so the comparison is not of numbers near the tolerance
        reference.table.normal_(generator=torch.Generator(DEVICE).manual_seed(0))
        fused.table.copy_(reference.table)
    return reference, fused


def sample_points():
    """Random points, points on every level's cell boundaries (x * scale + 0.5 an integer, as float32 rounds it),
    the box's faces, edges and corners (0 and 1)."""
    generator = torch.Generator().manual_seed(1)
    random = torch.rand(600, 3, generator=generator)
    boundaries = []
    for level in range(GRID["levels"]):
        scale = GRID["base_resolution"] * GRID["per_level_scale"] ** level - 1.0
        vertex = torch.randint(1, int(scale) + 1, (100, 3), generator=generator)
        on_boundary = ((vertex - 0.5) / scale).float()
        on_boundary[50:, 1:] = random[:50, 1:]  # on a boundary along x only
        boundaries.append(on_boundary)
    corners = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.float32)
    faces = torch.rand(60, 3, generator=generator)
    faces[torch.arange(60), torch.arange(60) % 3] = (torch.arange(60) % 2).float()  # one coordinate 0 or 1
    return torch.cat([random, *boundaries, corners, faces]).to(DEVICE)


def assert_close_scaled(ours: torch.Tensor, reference: torch.Tensor, relative: float) -> None:
    torch.testing.assert_close(ours, reference, rtol=0.0, atol=relative * float(reference.detach().abs().max()))


@runs_kernels
def test_forward_gradient_rows_and_table_gradient_equal_the_torch_reference():
    reference, fused = grids()
    assert fused.sides[0] and not fused.sides[1] and not fused.sides[2]  # one dense level, two hashed
    x01 = sample_points()
    position = x01 * 4.0 + 0.5  # level 0
    assert (position == position.floor()).any(dim=1).sum() >= 50  # points exactly on a cell boundary
    features, rows = fused(x01, with_gradient=True)
    expected_features, expected_rows = reference(x01, with_gradient=True)
    assert features.shape == (x01.shape[0], 6) and rows.shape == (x01.shape[0], 3, 6)
    assert_close_scaled(features, expected_features, 2e-6)
    assert_close_scaled(rows, expected_rows, 2e-6)
    # a loss on both outputs: the table gradient gets the features' and the gradient rows' terms
    generator = torch.Generator().manual_seed(2)
    feature_weights = torch.randn(expected_features.shape, generator=generator).to(DEVICE)
    row_weights = torch.randn(expected_rows.shape, generator=generator).to(DEVICE)
    ((features * feature_weights).sum() + (rows * row_weights).sum()).backward()
    ((expected_features * feature_weights).sum() + (expected_rows * row_weights).sum()).backward()
    assert fused.table.grad.dtype == torch.float32 and fused.table.grad.abs().sum() > 0
    assert_close_scaled(fused.table.grad, reference.table.grad, 1e-5)


@runs_kernels
def test_features_alone_and_their_table_gradient_with_three_features_a_level():
    """The features-only launch (no gradient rows) and a feature count that is not a power of two (masked)."""
    reference, fused = grids(features_per_level=3, levels=2)
    x01 = sample_points()
    features = fused(x01)
    expected = reference(x01)
    assert_close_scaled(features, expected, 2e-6)
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    (features * weights).sum().backward()
    (expected * weights).sum().backward()
    assert_close_scaled(fused.table.grad, reference.table.grad, 1e-5)


def table_gradient_arguments(reference: HashGrid, fused: HashGrid, x01: torch.Tensor, seed: int) -> tuple:
    """``hash_grid_kernels.table_gradient``'s arguments up to ``spread_rows`` for random output gradients at x01,
    whose table gradient the torch reference has been given (``reference.table.grad``)."""
    expected_features, expected_rows = reference(x01, with_gradient=True)
    generator = torch.Generator().manual_seed(seed)
    feature_weights = torch.randn(expected_features.shape, generator=generator).to(DEVICE)
    row_weights = torch.randn(expected_rows.shape, generator=generator).to(DEVICE)
    ((expected_features * feature_weights).sum() + (expected_rows * row_weights).sum()).backward()
    rows, features = fused.table.shape
    return x01, feature_weights, row_weights, fused.level_scales, fused.level_layout, rows, features


@runs_kernels
def test_table_gradient_spread_over_copies_equals_the_torch_reference(monkeypatch):
    """The coarse levels' adds spread over copies (the field's setting: every level but the last here, whose rows
    fit in SPREAD_ROWS_LIMIT) sum to the same table gradient as one table does, and as the torch path's. Programs of
    32 points, so that the ~1,000 points make more programs than there are copies (every copy is written)."""
    from backend.nerf import hash_grid_kernels as kernels
    from backend.nerf.hash_grid_triton import spread_rows_of

    monkeypatch.setattr(kernels, "GRADIENT_BLOCK", 32)
    reference, fused = grids()
    spread_rows = spread_rows_of(fused.offsets)
    assert spread_rows == fused.offsets[-1] > 0 and fused.spread_rows == spread_rows
    x01 = sample_points()
    assert x01.shape[0] >= kernels.SPREAD * 32
    arguments = table_gradient_arguments(reference, fused, x01, seed=9)
    # point by point (test_table_gradient_with_runs_merged_... adds the merged runs to the spread)
    spread = kernels.table_gradient(*arguments, spread_rows, merge_runs=False)
    single = kernels.table_gradient(*arguments, 0, merge_runs=False)
    assert_close_scaled(spread, single, 1e-5)
    assert_close_scaled(spread, reference.table.grad, 1e-5)
    assert spread[:spread_rows].abs().sum() > 0


def ray_points(count: int = 1000) -> torch.Tensor:
    """Points as a render packs them: runs of consecutive samples along rays (up to 40 a ray, 0.01 apart), so that
    consecutive points often share a cell at the coarse levels; some rays leave the box (clamped to its faces)."""
    generator = torch.Generator().manual_seed(4)
    points, total = [], 0
    while total < count:
        samples = int(torch.randint(1, 41, (), generator=generator))
        origin = torch.rand(3, generator=generator) * 1.2 - 0.1
        direction = torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)
        points.append(origin + direction * 0.01 * torch.arange(samples, dtype=torch.float32)[:, None])
        total += samples
    return torch.cat(points)[:count].clamp(0.0, 1.0).to(DEVICE)


@runs_kernels
def test_table_gradient_with_runs_merged_equals_the_torch_reference(monkeypatch):
    """Consecutive points in one cell (a ray's samples) summed before their adds (``merge_runs``, the default): the
    same table gradient as adding point by point, and as the torch path's, with runs that cross programs' edges
    (programs of 32 points) and end at the last point; the coarse levels' adds spread over copies, as the field
    runs it."""
    from backend.nerf import hash_grid_kernels as kernels

    monkeypatch.setattr(kernels, "GRADIENT_BLOCK", 32)
    reference, fused = grids()
    x01 = ray_points()
    cells = (x01 * 4.0 + 0.5).floor()  # level 0
    assert (cells[1:] == cells[:-1]).all(dim=1).float().mean() > 0.8  # mostly runs at the coarse level
    assert x01.shape[0] >= kernels.SPREAD * 32 and fused.spread_rows > 0
    arguments = table_gradient_arguments(reference, fused, x01, seed=5)
    merged = kernels.table_gradient(*arguments, fused.spread_rows)
    point_by_point = kernels.table_gradient(*arguments, fused.spread_rows, merge_runs=False)
    assert kernels.MERGE_RUNS
    assert_close_scaled(merged, point_by_point, 1e-5)
    assert_close_scaled(merged, reference.table.grad, 1e-5)


@runs_kernels
def test_field_with_the_fused_encoding_equals_the_torch_field():
    """The whole field with analytic normals (the trainer's path): density, albedo, normals and every parameter's
    gradient of a loss on all three, fused encoding against the torch one with the same weights."""
    config = FieldConfig(levels=2, log2_hashmap_size=9, base_resolution=5, per_level_scale=2.0, mlp_width=16,
                         compile=False, encoding="torch")
    torch.manual_seed(4)
    reference = RadianceField(config).to(DEVICE)
    fused = RadianceField(FieldConfig(**{**config.__dict__, "encoding": "triton"})).to(DEVICE)
    fused.load_state_dict(reference.state_dict())
    with torch.no_grad():  # features large enough that ReLUs switch and normals vary from point to point
        reference.encoding.table.uniform_(-1.0, 1.0, generator=torch.Generator(DEVICE).manual_seed(5))
        fused.encoding.table.copy_(reference.encoding.table)
    points = (sample_points() * 2.4 - 1.2)  # world units, some outside the box
    light = torch.randn(points.shape, generator=torch.Generator().manual_seed(6)).to(DEVICE)

    def run(field):
        density, albedo, normals = field(points, with_normals=True)
        (density.sin() + albedo.sum(-1) + (normals * light).sum(-1) ** 2).sum().backward()
        return [density, albedo, normals] + [parameter.grad for parameter in field.parameters()]

    for ours, theirs in zip(run(fused), run(reference)):
        assert_close_scaled(ours, theirs, 1e-5)  # as the table gradient's (then through the MLP)


def test_positions_that_need_a_gradient_take_the_torch_path_or_are_refused():
    """The fused path gives positions no gradient: ``auto`` falls back to torch for them (autograd normals keep
    working), ``triton`` says why it cannot, and the settings refuse ``triton`` with autograd normals up front."""
    reference, fused = grids()
    x01 = sample_points().requires_grad_(True)
    auto = HashGrid(**GRID, encoding="auto").to(DEVICE)
    assert not auto.uses_fused(x01)
    # 'auto' takes the fused kernels on CUDA only: Triton's CPU interpreter (set by this module) is for 'triton'
    assert auto.uses_fused(x01.detach()) == (DEVICE.type == "cuda")
    assert fused.uses_fused(x01.detach())
    (gradient,) = torch.autograd.grad(auto(x01).sum(), x01)
    assert gradient.abs().sum() > 0
    with pytest.raises(SettingsError, match="field.encoding.*no gradient"):
        fused(x01)
    config = fast()
    config.field.encoding, config.field.normals = "triton", "autograd"
    with pytest.raises(SettingsError, match="field.normals"):
        config.validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU case: no CUDA device, no interpreter")
def test_without_cuda_or_the_interpreter_auto_is_torch_and_triton_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x01 = sample_points()
    assert not HashGrid(**GRID, encoding="auto").uses_fused(x01)
    forced = HashGrid(**GRID, encoding="triton")
    with pytest.raises(SettingsError, match="'field.encoding' is 'triton' but .* runs on CUDA devices, not on cpu"):
        forced(x01)
    with pytest.raises(SettingsError, match="runs on CUDA devices"):
        forced.check_device(torch.device("cpu"))


@pytest.mark.gpu
@needs_cuda
def test_published_size_grid_equals_the_torch_reference_on_a_million_points():
    """FieldConfig's grid (16 levels x 2 features, 2^19 rows a level: 4 dense levels, 12 hashed) on 1M points, the
    size of a real step. The table gradient's coarse entries each sum ~1,600 points' terms in the atomic adds'
    order: atol 1e-4 x the largest entry."""
    config = FieldConfig()
    settings = dict(levels=config.levels, features_per_level=config.features_per_level,
                    log2_hashmap_size=config.log2_hashmap_size, base_resolution=config.base_resolution,
                    per_level_scale=config.per_level_scale)
    reference = HashGrid(**settings, encoding="torch").to(DEVICE)
    fused = HashGrid(**settings, encoding="auto").to(DEVICE)
    with torch.no_grad():
        reference.table.uniform_(-1.0, 1.0, generator=torch.Generator(DEVICE).manual_seed(7))
        fused.table.copy_(reference.table)
    x01 = torch.cat([torch.rand(1 << 20, 3, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(8)),
                     sample_points()])
    assert fused.uses_fused(x01)
    features, rows = fused(x01, with_gradient=True)
    expected_features, expected_rows = reference(x01, with_gradient=True)
    assert_close_scaled(features, expected_features, 2e-6)
    assert_close_scaled(rows, expected_rows, 2e-6)
    feature_weights = torch.randn_like(features)
    row_weights = torch.randn_like(rows)
    ((features * feature_weights).sum() + (rows * row_weights).sum()).backward()
    ((expected_features * feature_weights).sum() + (expected_rows * row_weights).sum()).backward()
    assert_close_scaled(fused.table.grad, reference.table.grad, 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_compiled_field_with_the_fused_encoding_equals_the_plain_torch_field():
    """The trainer's CUDA field (``compile`` on, ``encoding`` auto: the fused ops inside torch.compile's graph)
    against the eager torch field: density, albedo and normals, and the parameter gradients of a loss on all three,
    within 1e-4 x the largest value (the compiled graph sums in its own order too). Points where a hidden unit's
    input lies within 1e-4 of its scale from 0 (~1% of them) are left out of the loss and of the normals'
    comparison: there the two paths' last-bit differences may switch the ReLU on in one and off in the other, and
    the normal and the gradient jump, though the values do not."""
    torch.manual_seed(9)
    reference = RadianceField(FieldConfig(encoding="torch", compile=False)).to(DEVICE)
    fused = RadianceField(FieldConfig()).to(DEVICE)
    fused.load_state_dict(reference.state_dict())
    with torch.no_grad():
        reference.encoding.table.uniform_(-1.0, 1.0, generator=torch.Generator(DEVICE).manual_seed(10))
        fused.encoding.table.copy_(reference.encoding.table)
    fused.use_compiled()
    points = torch.rand(100_000, 3, device=DEVICE) * 2.2 - 1.1
    assert fused.encoding.uses_fused(points)
    light = torch.randn_like(points)
    with torch.no_grad():
        features = reference.encoding(reference._unit_cube(points).clamp(0.0, 1.0))
        clear = torch.ones(points.shape[0], dtype=torch.bool, device=DEVICE)
        for network in (reference.density_mlp, reference.albedo_mlp):
            hidden = network[0](features)  # the one hidden layer's inputs (FieldConfig: 1 hidden layer)
            clear &= (hidden.abs() > 1e-4 * hidden.abs().max()).all(dim=-1)
    assert clear.float().mean() > 0.9

    def run(field):
        density, albedo, normals = field(points, with_normals=True)
        loss_terms = density.sin() + albedo.sum(-1) + (normals * light).sum(-1) ** 2
        (loss_terms * clear).sum().backward()
        values = [density, albedo, field.density(points), normals[clear]]
        return [value.detach() for value in values] + [p.grad for p in field.parameters()]

    ours = run(fused)
    for value, expected in zip(ours, run(reference)):
        assert_close_scaled(value, expected, 1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU case: no CUDA device, no interpreter")
def test_a_run_forcing_triton_where_it_cannot_run_is_refused_at_the_start(tiny_model, tmp_path, monkeypatch):
    from backend.nerf.trainer import SDSTrainer
    from tests.helpers.targets import small_config

    monkeypatch.delenv("TRITON_INTERPRET")
    config = small_config(steps=1)
    config.field.encoding = "triton"
    with pytest.raises(SettingsError, match="'field.encoding' is 'triton' but .* not on cpu"):
        SDSTrainer(config, tiny_model, torch.zeros(1, 1, 8), tmp_path)  # refused before the context is used
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _density_fields(levels: int, mlp_width: int, half: bool, **grid):
    """A torch field and a fused one with the same weights (tables of order 1: the ReLUs switch from point to point),
    MLPs in float32 or, with ``half``, under float16 autocast."""
    config = FieldConfig(levels=levels, mlp_width=mlp_width, compile=False, encoding="torch", **grid)
    torch.manual_seed(11)
    reference = RadianceField(config).to(DEVICE)
    fused = RadianceField(FieldConfig(**{**config.__dict__, "encoding": "triton"})).to(DEVICE)
    fused.load_state_dict(reference.state_dict())
    with torch.no_grad():
        reference.encoding.table.uniform_(-1.0, 1.0, generator=torch.Generator(DEVICE).manual_seed(12))
        fused.encoding.table.copy_(reference.encoding.table)
    if half:
        reference.mlp_autocast_dtype = fused.mlp_autocast_dtype = torch.float16
    return reference, fused


@runs_kernels
@pytest.mark.parametrize("half", [False, True])
def test_fused_density_equals_the_torch_fields_density(half):
    """``RadianceField.density`` without gradients in one kernel (hash grid, density MLP, blob, softplus) against
    the torch field's, on points inside and outside the box (world units; outside: clamped to its faces).
    Tolerances: float32 MLPs, 1e-5 x the largest density (the features' summation order, then a 16-term product);
    float16 MLPs, 2e-3 x (float16 rounds each layer's output to 2^-11 relative, and a hidden value that rounds the
    other way in the torch path moves the output by up to that)."""
    reference, fused = _density_fields(levels=8, mlp_width=16, half=half, log2_hashmap_size=9, base_resolution=5,
                                       per_level_scale=1.5)
    points = sample_points() * 2.4 - 1.2
    with torch.no_grad():
        assert fused.uses_fused_density(points) and not reference.uses_fused_density(points)
        ours, theirs = fused.density(points), reference.density(points)
    assert ours.dtype == torch.float32 and ours.shape == (points.shape[0],)
    assert float(theirs.std()) > 0.1  # densities that vary: a comparison of the MLP, not of the blob alone
    assert_close_scaled(ours, theirs, 2e-3 if half else 1e-5)


@runs_kernels
def test_densities_with_gradients_take_the_differentiable_path():
    """With gradients wanted the density comes from the field's autograd path, and the fused op refuses them."""
    reference, fused = _density_fields(levels=8, mlp_width=16, half=False, log2_hashmap_size=9, base_resolution=5,
                                       per_level_scale=1.5)
    points = sample_points() * 2.0 - 1.0
    assert not fused.uses_fused_density(points)  # gradients enabled here
    density = fused.density(points)
    density.sum().backward()
    assert fused.density_mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no gradients"):
        from backend.nerf import hash_grid_triton

        hash_grid_triton.fused_density(points, fused.encoding.table, fused.encoding.level_scales,
                                       fused.encoding.level_layout, fused.density_mlp[0].weight,
                                       fused.density_mlp[2].weight, 1.0, 10.0, 0.5, False)
    narrow = RadianceField(FieldConfig(levels=4, mlp_width=16, compile=False, encoding="triton")).to(DEVICE)
    with torch.no_grad():  # 4 levels x 2 features: fewer than the 16 columns Triton's matrix product needs
        assert not narrow.uses_fused_density(points)
        assert narrow.density(points).shape == (points.shape[0],)


@pytest.mark.gpu
@needs_cuda
def test_published_size_fused_density_equals_the_compiled_fields():
    """FieldConfig's field (16 levels x 2 features, 64 neurons) as a CUDA run has it (float16 MLPs): the fused
    density on 1M points against the torch field's under float16 autocast, within 2e-3 x the largest density (as
    above), and against the compiled field's the same."""
    reference, fused = _density_fields(levels=16, mlp_width=64, half=True)
    points = torch.rand(1 << 20, 3, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(13)) * 2.2 - 1.1
    compiled = RadianceField(FieldConfig()).to(DEVICE)
    compiled.load_state_dict(reference.state_dict())
    compiled.mlp_autocast_dtype = torch.float16
    compiled.use_compiled()
    with torch.no_grad():
        assert fused.uses_fused_density(points)
        ours = fused.density(points)
        theirs = reference.density(points)
        compiled.config.fused_density = False
        through_compile = compiled.density(points)
    assert_close_scaled(ours, theirs, 2e-3)
    assert_close_scaled(ours, through_compile, 2e-3)

"""CUDA only: the compiled field's analytic normals against the plain-torch ones, and what compiling costs a run.

Prints quantiles of |compiled - plain| normals at 200k random points (a trilinear field's gradient jumps at cell
faces, so the few points within a rounding error of one can differ), then the seconds between the events of a
60-step `fast` generate with the published-size model (random weights) in bf16 with the CUDA-graph UNet: the first
step and the first 256^2/128^2 step include the compiles. Run: python bench/cuda_compile_check.py
"""

import time, torch, tempfile
t0 = time.perf_counter()
from backend.nerf.field import RadianceField
from backend.nerf.presets import FieldConfig, preset, set_option
torch.manual_seed(0)
f = RadianceField(FieldConfig()).cuda()
with torch.no_grad():
    f.encoding.table.uniform_(-1, 1)
pts = torch.rand(200000, 3, device="cuda") * 2.2 - 1.1
f.config.normals = "analytic"
_, _, n0 = f(pts, with_normals=True)
f.use_compiled()
_, _, n1 = f(pts, with_normals=True)
err = (n0 - n1).norm(dim=-1)
print("CUDA compiled vs plain analytic normals |diff| quantiles 50/99/99.9/max:",
      [f"{v:.1e}" for v in torch.quantile(err.float().detach(), torch.tensor([0.5, 0.99, 0.999, 1.0], device="cuda")).tolist()],
      "points > 1e-2:", int((err > 1e-2).sum()), "of", len(err))
from backend.models.multiview_model import build_random_published_model
from backend.models.acceleration import accelerate_for_inference
from backend.nerf.trainer import generate
from backend.events import Progress
t = time.perf_counter()
model = build_random_published_model(0, device="cuda").to(dtype=torch.bfloat16).eval()
print(f"model built: {time.perf_counter() - t:.1f} s")
accelerate_for_inference(model, "reduce-overhead")
config = preset("fast")
set_option(config, "run.steps", 60)
set_option(config, "run.mesh_every", 30)
start = time.perf_counter()
last = start
with tempfile.TemporaryDirectory() as work:
    image = torch.ones(1, 3, 256, 256, device="cuda")
    for event in generate(model, config, work, image=image, device=torch.device("cuda")):
        now = time.perf_counter()
        if isinstance(event, Progress):
            if event.step in (1, 2, 3, 10, 29, 30, 31, 32, 40, 59, 60):
                print(f"step {event.step:3d} ({event.phase}): +{now - last:6.2f} s, total {now - start:6.1f} s")
        else:
            print(f"{type(event).__name__}: +{now - last:6.2f} s, total {now - start:6.1f} s")
        last = now

"""How long the add-on keeps Blender's UI thread busy sending a photo: a 6000x4000 (24 MP) JPEG is made, then
prepared as the Generate button does (decoded and downscaled in a child process, the small result encoded here).

    python bench/image_input_ui_time.py [JPEG]     # bpy must be importable; prints one line per attempt
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bpy  # noqa: F401  (before the add-on, which imports it)
import numpy as np

from blender_addon import image_input

if len(sys.argv) > 1:
    photo = sys.argv[1]
else:
    from PIL import Image

    photo = os.path.join(tempfile.mkdtemp(), "camera.jpg")
    rng = np.random.default_rng(0)
    pixels = (rng.random((4000, 6000, 3)) * 40 + np.linspace(0, 200, 6000)[None, :, None]).astype(np.uint8)
    Image.fromarray(pixels).save(photo, quality=90)
for attempt in range(3):
    t0 = time.perf_counter()
    inside = worst = 0.0

    def timed(function, *arguments):
        global inside, worst
        started = time.perf_counter()
        result = function(*arguments)
        spent = time.perf_counter() - started
        inside, worst = inside + spent, max(worst, spent)
        return result

    prepared = timed(image_input.prepare_file, photo)
    while not timed(prepared.ready):
        time.sleep(0.02)
    png = timed(prepared.result)
    print(f"wall {time.perf_counter() - t0:.2f} s; in the add-on on the main thread {inside:.3f} s, "
          f"longest call {worst:.3f} s; PNG {len(png)} bytes")

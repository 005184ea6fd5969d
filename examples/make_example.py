"""Draws examples/example.png: a small shaded toy (a ball on a box) on a transparent background.

Ray-marched signed distance functions with Lambert shading, so the bundled example is made here, not downloaded.
Run: python examples/make_example.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 320


def scene_distance(p):
    box_half = np.array([0.45, 0.3, 0.45])
    q = np.abs(p - np.array([0.0, -0.35, 0.0])) - box_half
    box = np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0) - 0.05
    ball = np.linalg.norm(p - np.array([0.0, 0.32, 0.0]), axis=-1) - 0.38
    return np.minimum(box, ball), ball < box


def main() -> None:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    u = (xs + 0.5) / SIZE * 2 - 1
    v = 1 - (ys + 0.5) / SIZE * 2
    origin = np.array([1.9, 1.3, 2.6])
    forward = -origin / np.linalg.norm(origin)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    directions = forward + 0.42 * (u[..., None] * right + v[..., None] * up)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    depth = np.zeros((SIZE, SIZE))
    hit = np.zeros((SIZE, SIZE), bool)
    for _ in range(96):
        d, _ = scene_distance(origin + depth[..., None] * directions)
        hit |= d < 1e-3
        depth = np.where(hit, depth, depth + d)
    points = origin + depth[..., None] * directions
    eps = 1e-3
    normal = np.stack(
        [
            scene_distance(points + np.eye(3)[i] * eps)[0] - scene_distance(points - np.eye(3)[i] * eps)[0]
            for i in range(3)
        ],
        axis=-1,
    )
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
    light = np.array([0.5, 0.9, 0.6])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip((normal * light).sum(-1), 0, 1)
    _, is_ball = scene_distance(points)
    colour = np.where(is_ball[..., None], [0.85, 0.25, 0.2], [0.25, 0.45, 0.8]) * shade[..., None]
    rgba = np.concatenate([colour, hit[..., None].astype(float)], axis=-1)
    rgba[~hit] = 0
    Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(Path(__file__).with_name("example.png"))


if __name__ == "__main__":
    main()

"""A synthetic stand-in for NYUv2, in exactly the on-disk format of :mod:`gradnorm.data.nyuv2`.

Each sample is a ray-cast room: floor, ceiling, back and side walls, a picture or window on the back
wall and a few boxes (furniture) on the floor, seen by a pinhole camera with random height, pitch
and yaw. From the scene come, per pixel, exact metric z-depth, the surface normal in camera
coordinates (x right, y down, z forward; it faces the camera), and the class of the surface (NYUv2's
13-class ids: bed 0, books 1, ceiling 2, chair 3, floor 4, furniture 5, objects 6, picture 7, sofa 8,
table 9, tv 10, wall 11, window 12). The image is rendered from them: a colour per class, a texture
fixed to the surface, Lambertian shading and noise. So all three tasks are learnable from the image.
Three random rectangles hold missing ground truth: labels -1, depth 0, normals (0, 0, 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FLOOR, CEILING, WALL, PICTURE, WINDOW = 4, 2, 11, 7, 12
BOX_CLASSES = (0, 1, 3, 5, 6, 8, 9, 10)
PALETTE = np.array([  # an RGB albedo per class
    [0.75, 0.35, 0.35], [0.30, 0.55, 0.80], [0.92, 0.92, 0.88], [0.55, 0.35, 0.15], [0.45, 0.32, 0.22],
    [0.60, 0.45, 0.30], [0.85, 0.70, 0.20], [0.20, 0.60, 0.35], [0.35, 0.30, 0.60], [0.70, 0.55, 0.40],
    [0.08, 0.08, 0.10], [0.80, 0.78, 0.70], [0.65, 0.85, 0.95],
], dtype=np.float64)


def render_scene(height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample: ``image`` H×W×3 in [0, 1], ``label`` H×W, ``depth`` H×W×1, ``normal`` H×W×3."""
    focal = 0.85 * width
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    rays = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u)], axis=-1)
    rotation = _rotation(pitch=rng.uniform(-0.25, 0.1), yaw=rng.uniform(-0.35, 0.35))
    directions = rays @ rotation.T  # world frame; the camera sits at the origin

    camera_height = rng.uniform(1.0, 1.6)
    back, left, right = rng.uniform(3.5, 7.0), rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0)
    planes = [  # (inward normal n, offset c) of the plane n·p = c, class
        (np.array([0.0, -1.0, 0.0]), -camera_height, FLOOR),
        (np.array([0.0, 1.0, 0.0]), -(2.7 - camera_height), CEILING),
        (np.array([0.0, 0.0, -1.0]), -back, WALL),
        (np.array([1.0, 0.0, 0.0]), -left, WALL),
        (np.array([-1.0, 0.0, 0.0]), -right, WALL),
    ]
    shape = (height, width)
    t_hit = np.full(shape, np.inf)
    normal_world = np.zeros(shape + (3,))
    label = np.full(shape, WALL, dtype=np.int64)
    for normal, offset, cls in planes:
        denominator = directions @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(denominator < -1e-9, offset / denominator, np.inf)
        closer = (t > 0) & (t < t_hit)
        t_hit[closer], normal_world[closer], label[closer] = t[closer], normal, cls

    hit = directions * t_hit[..., None]
    on_back_wall = np.isclose(hit[..., 2], back) & (label == WALL)
    x0, y0 = rng.uniform(-1.2, 0.4), rng.uniform(-1.0, 0.0)
    framed = on_back_wall & (hit[..., 0] > x0) & (hit[..., 0] < x0 + rng.uniform(0.6, 1.4)) & \
        (hit[..., 1] > y0) & (hit[..., 1] < y0 + rng.uniform(0.4, 0.9))
    label[framed] = PICTURE if rng.random() < 0.5 else WINDOW

    for _ in range(rng.integers(1, 4)):
        size = rng.uniform([0.4, 0.3, 0.4], [1.4, 1.1, 1.2])
        low = np.array([rng.uniform(-left, right - size[0]), camera_height - size[1], rng.uniform(1.5, back - size[2])])
        t, normal = _ray_box(directions, low, low + size)
        closer = t < t_hit
        t_hit[closer], normal_world[closer] = t[closer], normal[closer]
        label[closer] = rng.choice(BOX_CLASSES)

    depth = t_hit  # rays have z = 1 in the camera frame, so t is the z-depth
    normal = normal_world @ rotation  # R^T n, row-wise: camera frame
    points = directions * t_hit[..., None]
    image = _shade(label, normal, points, depth, rng)

    depth, normal, label = depth.copy(), normal.copy(), label.copy()
    depth[_random_box(shape, rng)] = 0.0
    normal[_random_box(shape, rng)] = 0.0
    label[_random_box(shape, rng)] = -1
    return {"image": image.astype(np.float32), "label": label.astype(np.float32),
            "depth": depth[..., None].astype(np.float32), "normal": normal.astype(np.float32)}


def _rotation(pitch: float, yaw: float) -> np.ndarray:
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    about_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return about_y @ about_x


def _ray_box(directions: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each ray from the origin to an axis-aligned box (inf: missed), and the normal
    of the face hit (slab method)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low, t_high = low / directions, high / directions
    t_near, t_far = np.minimum(t_low, t_high), np.maximum(t_low, t_high)
    t_near = np.nan_to_num(t_near, nan=-np.inf)
    t_far = np.nan_to_num(t_far, nan=np.inf)
    entry, exit_ = t_near.max(-1), t_far.min(-1)
    hit = (entry <= exit_) & (entry > 0)
    axis = t_near.argmax(-1)
    normal = np.zeros(directions.shape)
    rows = np.indices(axis.shape)
    normal[(*rows, axis)] = -np.sign(np.take_along_axis(directions, axis[..., None], -1)[..., 0])
    return np.where(hit, entry, np.inf), normal


def _shade(label, normal, points, depth, rng) -> np.ndarray:
    albedo = np.clip(PALETTE + rng.normal(0, 0.04, PALETTE.shape), 0, 1)[label]
    texture = 0.85 + 0.15 * np.sign(np.sin(4 * points[..., 0]) * np.sin(4 * points[..., 2] + 3 * points[..., 1]))
    to_light = np.array([rng.uniform(-0.5, 0.5), -1.0, -0.6])  # up (−y) and towards the camera (−z)
    to_light /= np.linalg.norm(to_light)
    lambert = np.clip(normal @ to_light, 0, None)
    shading = (0.35 + 0.65 * lambert) / (1 + 0.02 * depth**2)
    image = albedo * (texture * shading)[..., None] + rng.normal(0, 0.02, albedo.shape)
    return np.clip(image, 0, 1)


def _random_box(shape: tuple[int, int], rng: np.random.Generator) -> tuple[slice, slice]:
    h, w = max(1, shape[0] // 6), max(1, shape[1] // 6)
    top, left = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
    return slice(top, top + h), slice(left, left + w)


def write_fake_nyuv2(out_dir: str | Path, n_train: int = 32, n_val: int = 16, height: int = 64,
                     width: int = 96, seed: int = 0) -> Path:
    """Write ``out_dir/{train,val}/{image,label,depth,normal}/<i>.npy``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        for kind in ("image", "label", "depth", "normal"):
            (out_dir / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            for kind, array in render_scene(height, width, rng).items():
                np.save(out_dir / split / kind / f"{i}.npy", array)
    return out_dir

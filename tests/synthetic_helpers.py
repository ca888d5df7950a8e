"""Hand-made scenes and atlases for the synthetic renderer tests (both renderers draw SceneBatch scenes)."""

from __future__ import annotations

import numpy as np

from madis_stereo.data.synthetic.atlas import Atlas
from madis_stereo.data.synthetic.scene import FIELD_KEYS, SHAPE_KINDS, SHAPE_PARAMS, SceneBatch, fit_fields


def make_scene(size: tuple[int, int], layers: list[dict]) -> tuple[SceneBatch, Atlas]:
    """One scene of flat-grey, unshaded layers, identical photometry in both views, and its atlas.

    Each layer dict: FIELD_KEYS values (default 0), ``grey`` (its colour), optional ``kind`` (SHAPE_KINDS
    name), ``shape`` (cx, cy, angle, parameters) and ``domain`` (default: the whole canvas).
    """
    height, width = size
    count = len(layers)
    field = np.array([[float(layer.get(k, 0.0)) for k in FIELD_KEYS] for layer in layers])[None]
    domain = np.array([layer.get("domain", [-2.0, -1.0, width + 64.0, float(height)]) for layer in layers],
                      np.float64)[None]
    shape = np.zeros((1, count, SHAPE_PARAMS))
    for k, layer in enumerate(layers):
        values = layer.get("shape", [])
        shape[0, k, : len(values)] = values
    drange = fit_fields(field, domain, -1e9, 1e9, np.inf)
    tiles = np.stack([np.full((8, 8, 3), layer["grey"], np.uint8) for layer in layers])
    texmap = np.zeros((1, count, 2, 3))
    texmap[..., 0, 0] = texmap[..., 1, 1] = 1.0
    f32 = np.float32
    scene = SceneBatch(
        active=np.ones((1, count), bool), field=field.astype(f32), domain=domain.astype(f32),
        drange=drange.astype(f32), kind=np.array([[SHAPE_KINDS.index(layer.get("kind", "full")) for layer in layers]]),
        shape=shape.astype(f32), tile=np.arange(count)[None], texmap=texmap.astype(f32),
        contrast=np.ones((1, count), f32), tint=np.ones((1, count, 3), f32), specular=np.zeros((1, count, 5), f32),
        gain_right=np.ones((1, count), f32), light=np.array([[0, 0, 1]], f32), ambient=np.ones(1, f32),
        exposure=np.ones((1, 2), f32), white=np.ones((1, 2, 3), f32), bias=np.zeros((1, 2), f32),
        gamma=np.ones((1, 2), f32), blur=np.zeros((1, 2), f32), noise=np.zeros((1, 2), f32), focal=float(width),
        size=(height, width),
    )
    return scene, Atlas(tiles, tiles.reshape(count, -1, 3).mean(1).astype(f32))


def smooth_atlas(count: int, size: int) -> Atlas:
    """Smooth sinusoidal tiles: bilinear interpolation reproduces them almost exactly."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    tiles = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [0.5 + 0.4 * np.sin(xx / 5 + p) * np.cos(yy / 7 + p) for p in phase]
        tiles.append(np.round(np.stack(channels, -1) * 255).astype(np.uint8))
    tiles = np.stack(tiles)
    return Atlas(tiles, tiles.reshape(count, -1, 3).mean(1).astype(np.float32))


def box_scene() -> tuple[SceneBatch, Atlas]:
    """16x64: background at d=4 (grey 50), a box covering x in [20.5, 30.5] at d=12 (grey 200), all rows.
    Exact answers: left d = 12 at x 21..30; right d = 12 at x 9..18; occluded x <= 3 (out of the right
    view) and 13..20 (behind the box)."""
    return make_scene((16, 64), [
        {"d0": 4.0, "grey": 50},
        {"d0": 12.0, "grey": 200, "kind": "box", "shape": [25.5, 8.0, 0.0, 5.0, 100.0],
         "domain": [20.5, -1.0, 30.5, 16.0]},
    ])

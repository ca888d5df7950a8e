"""The synthetic stereo world rendered in batches by torch, on the training device (CUDA, or CPU in tests).

Scenes come from ``data.synthetic.scene.sample_scenes`` (the same distribution as the NumPy/OpenCV reference
in ``data/synthetic/world.py``); their per-layer parameters become ``[B, L, ...]`` tensors on the device, and everything
else happens there, with no round trip through the CPU:

1. shape test: each active layer's analytic region (``shapes.py``'s ellipses, rings, boxes, fences, blobs
   and star polygons, evaluated exactly at any position) and its domain box, grouped by shape kind;
2. disparity field per layer (exact GT): the quadratic ``d_k(x, y)`` of ``scene.py``; in the right view at
   the left position ``x_l`` solving ``x_l - d_k(x_l, y) = x_r``, which for a quadratic field is the root
   of ``-hxx/2 u^2 + (1 - gx - hxy v) u + (px - d0 - gy v - hyy v^2 / 2 - x_r) = 0`` with a positive slope,
   taken in the cancellation-free form ``u = -2c / (b + sqrt(b^2 - 4ac))``;
3. z-buffer: the max of disparity over the layers (the argmax is the visible layer);
4. texture: the visible layer's texel coordinates, one ``grid_sample`` into the texture atlas (``atlas.py``)
   held on the device, then contrast, tint and orientation shading (``scene.shading``);
5. camera per view: highlights, exposure/white balance/gamma (``scene.tone``), blur, noise, uint8.

Batch ``n`` of a :class:`DeviceRenderer` is a pure function of (config seed, ``stream``, ``n``, batch size).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madis_stereo.data.augment import AugmentConfig
from madis_stereo.data.synthetic.atlas import Atlas, build_atlas, reflect
from madis_stereo.data.synthetic.config import SyntheticConfig
from madis_stereo.data.synthetic.scene import (
    BLOB_HARMONICS,
    POLYGON_VERTICES,
    SHAPE_KINDS,
    SceneBatch,
    disparity_at,
    sample_scenes,
    shading,
    tone,
)
from madis_stereo.training.device_augment import DeviceAugment

__all__ = ["DeviceBatches", "DeviceRenderer", "PreparedBatch", "RenderedBatch"]

_EPS = 1e-3  # disparity margin for "strictly nearer", as in the reference
_MIN_WINDOW = 16  # smallest window (pixels) a layer is evaluated on
PIXELS_PER_CALL = 1 << 26  # DeviceBatches on CUDA: pixels rendered per call (512 pairs of 256x512)
# per-layer parameters the appearance needs, packed in one table: name -> columns (tile indices are exact in float)
_TABLE = {"field": (0, 8), "texmap": (8, 14), "tile": (14, 15), "contrast": (15, 16), "tint": (16, 19),
          "gain_right": (19, 20), "specular": (20, 25)}


@dataclasses.dataclass
class RenderedBatch:
    """``left``/``right`` uint8 [B, 3, H, W]; ``disparity`` float32 [B, 1, H, W] (dense, exact, left view);
    ``nonocc`` bool [B, 1, H, W] or None; ``labels_left``/``labels_right`` int64 [B, H, W] (the visible layer
    slot of each pixel)."""

    left: Tensor
    right: Tensor
    disparity: Tensor
    nonocc: Tensor | None
    labels_left: Tensor
    labels_right: Tensor


@dataclasses.dataclass
class _Group:
    """Layers (flat ``b * L + l`` indices) of one shape kind evaluated together on windows of one size whose
    top-left pixels are ``offsets`` [N, 2] (x, y)."""

    kind: str
    slots: np.ndarray
    offsets: np.ndarray
    height: int
    width: int


@dataclasses.dataclass
class PreparedBatch:
    """The CPU side of one render call: the scenes, the seed of the sensor noise, the layer groups of the
    left and the right view."""

    scene: SceneBatch
    noise_seed: int
    plans: tuple[list[_Group], list[_Group]]


def _plan(scene: SceneBatch, right: bool | None) -> list[_Group]:
    """Group the active layers by shape kind and, on the pixel grid of a view (``right`` not None), by the
    size of the window that holds the layer in that view (power-of-two squares, cut to the image)."""
    height, width = scene.size
    slots = np.flatnonzero(scene.active)
    kinds = scene.kind.reshape(-1)[slots]
    if right is None:
        return [_Group(name, slots[kinds == k], np.zeros((0, 2), np.int64), height, width)
                for k, name in enumerate(SHAPE_KINDS) if (kinds == k).any()]
    dom = scene.domain.reshape(-1, 4)[slots].astype(np.float64)
    x0, x1 = dom[:, 0], dom[:, 2]
    if right:
        drange = scene.drange.reshape(-1, 2)[slots]
        x0, x1 = x0 - drange[:, 1], x1 - drange[:, 0]
    a = np.clip(np.floor(x0) - 1, 0, width - 1).astype(np.int64)
    b = np.clip(np.ceil(x1) + 1, 0, width - 1).astype(np.int64)
    ya = np.clip(np.floor(dom[:, 1]), 0, height - 1).astype(np.int64)
    yb = np.clip(np.ceil(dom[:, 3]), 0, height - 1).astype(np.int64)
    seen = (x1 >= -1) & (x0 <= width) & (dom[:, 3] >= -1) & (dom[:, 1] <= height)
    side = np.maximum(b - a + 1, yb - ya + 1)
    bucket = 2 ** np.ceil(np.log2(np.maximum(side, _MIN_WINDOW))).astype(np.int64)
    groups = []
    for k, name in enumerate(SHAPE_KINDS):
        for s in np.unique(bucket[(kinds == k) & seen]):
            pick = (kinds == k) & seen & (bucket == s)
            win_h, win_w = min(int(s), height), min(int(s), width)
            offsets = np.stack([np.minimum(a[pick], width - win_w), np.minimum(ya[pick], height - win_h)], 1)
            groups.append(_Group(name, slots[pick], offsets, win_h, win_w))
    return groups


def _columns(params: Tensor) -> list[Tensor]:
    """[N, K] -> K tensors [N, 1, 1] that broadcast against [N, H, W] positions."""
    return list(params[:, :, None, None].unbind(1))


def _local(shape: list[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    cx, cy, angle = shape[:3]
    c, s = torch.cos(angle), torch.sin(angle)
    dx, dy = x - cx, y - cy
    return dx * c + dy * s, dy * c - dx * s


def _bars(u: Tensor, v: Tensor, length: Tensor, half: Tensor, spacing: Tensor, count: Tensor) -> Tensor:
    extent = spacing * (count - 1) / 2
    t = (v + extent) / spacing
    near = (t - torch.floor(t) - 0.5).abs() >= 0.5 - half / spacing
    return near & (u.abs() <= length / 2) & (v.abs() <= extent + half)


def _blob(shape: list[Tensor], u: Tensor, v: Tensor) -> Tensor:
    r0, aspect = shape[3], shape[4]
    v = v / aspect
    rho2 = u * u + v * v
    rho = rho2.sqrt().clamp_min(1e-12)
    c1, s1 = u / rho, v / rho
    ck, sk = c1, s1
    outline = torch.ones_like(rho)
    for k in range(BLOB_HARMONICS):
        amp, phase = shape[5 + 2 * k], shape[6 + 2 * k]
        outline = outline + amp * (ck * torch.cos(phase) - sk * torch.sin(phase))
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return rho2 <= (r0 * outline) ** 2


def _polygon(shape: list[Tensor], u: Tensor, v: Tensor) -> Tensor:
    """Union of the triangles (centre, vertex j, vertex j + 1) of a star polygon."""
    r0, aspect, n = shape[3], shape[4], shape[5]
    v = v / aspect
    phis, radii = shape[6 : 6 + POLYGON_VERTICES], shape[6 + POLYGON_VERTICES :]
    vx = [r0 * r * torch.cos(p) for p, r in zip(phis, radii)]
    vy = [r0 * r * torch.sin(p) for p, r in zip(phis, radii)]
    inside = torch.zeros(torch.broadcast_shapes(u.shape, r0.shape), dtype=torch.bool, device=u.device)
    for j in range(POLYGON_VERTICES):
        wrap = j + 1 >= n  # the edge back to vertex 0
        ax, ay = vx[j], vy[j]
        bx = torch.where(wrap, vx[0], vx[(j + 1) % POLYGON_VERTICES])
        by = torch.where(wrap, vy[0], vy[(j + 1) % POLYGON_VERTICES])
        wedge = (ax * v - ay * u >= 0) & (u * by - v * bx > 0)
        edge = (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
        inside |= (j < n) & wedge & edge
    return inside


def _contains(kind: str, shape: list[Tensor], x: Tensor, y: Tensor) -> Tensor | None:
    """Whether (x, y) lies in each layer's shape of ``kind`` (None: the whole domain)."""
    if kind == "full":
        return None
    u, v = _local(shape, x, y)
    if kind in ("ellipse", "ring"):
        r2 = (u / shape[3]) ** 2 + (v / shape[4]) ** 2
        return (r2 <= 1) & (r2 >= shape[5] ** 2) if kind == "ring" else r2 <= 1
    if kind == "box":
        return (u.abs() <= shape[3]) & (v.abs() <= shape[4])
    if kind == "fence":
        bars = shape[3:7]
        return _bars(u, v, *bars) | ((shape[7] > 0.5) & _bars(v, u, *bars))
    return _blob(shape, u, v) if kind == "blob" else _polygon(shape, u, v)


def _source_x(field: list[Tensor], xr: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Left x of the surface point seen at right x ``xr`` (module docstring, step 2), and where it exists."""
    px, py, d0, gx, gy, hxx, hxy, hyy = field
    v = y - py
    a = -0.5 * hxx
    b = 1 - gx - hxy * v
    c = px - d0 - gy * v - 0.5 * hyy * v * v - xr
    disc = b * b - 4 * a * c
    denom = b + disc.clamp_min(0).sqrt()
    ok = (disc >= 0) & (denom > 0)
    return px - 2 * c / torch.where(ok, denom, torch.ones_like(denom)), ok


def _in_domain(domain: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    x0, y0, x1, y1 = domain
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


class DeviceRenderer:
    """Renders batches of ``batch_size`` synthetic stereo pairs of ``config`` on ``device``.

    ``stream`` separates independent sequences with the same config (e.g. one per training process).
    The texture atlas (by default the config's, built from its seed) is kept on the device as float32
    ``[1, 3, Ha, Wa]``.
    """

    def __init__(self, config: SyntheticConfig, batch_size: int, device: torch.device | str = "cpu",
                 stream: int = 0, atlas: Atlas | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.config, self.batch_size, self.stream = config, int(batch_size), int(stream)
        self.device = torch.device(device)
        self.load_atlas(atlas if atlas is not None else build_atlas(config.seed, config.atlas_tiles,
                                                                     config.atlas_tile_size))

    def load_atlas(self, atlas: Atlas) -> None:
        """Put ``atlas`` on the device (tiles in a grid of ``atlas_cols`` columns); scenes drawn from now on
        index its tiles."""
        self.tile_count, self.tile_size = atlas.count, atlas.size
        self.atlas_cols = math.ceil(math.sqrt(atlas.count))
        rows = math.ceil(atlas.count / self.atlas_cols)
        sheet = np.zeros((rows * atlas.size, self.atlas_cols * atlas.size, 3), np.uint8)
        for t, tile in enumerate(atlas.tiles):
            r, c = divmod(t, self.atlas_cols)
            sheet[r * atlas.size : (r + 1) * atlas.size, c * atlas.size : (c + 1) * atlas.size] = tile
        self.atlas = torch.from_numpy(sheet).to(self.device).permute(2, 0, 1)[None].float()
        self.means = torch.from_numpy(atlas.means).to(self.device)

    # --- batches ------------------------------------------------------------------------------------
    def sample(self, index: int) -> tuple[SceneBatch, int]:
        """The scenes of batch ``index`` and the seed of its sensor noise."""
        rng = np.random.default_rng([self.config.seed, 0x5CE7E, self.stream, index])
        scene = sample_scenes(rng, self.config, self.batch_size, self.tile_count, self.tile_size)
        return scene, int(rng.integers(0, 2**62))

    def prepare(self, index: int) -> PreparedBatch:
        """The CPU side of batch ``index`` (its scenes and their layer groups), done before its device work."""
        scene, noise_seed = self.sample(index)
        return PreparedBatch(scene, noise_seed, (_plan(scene, False), _plan(scene, True)))

    def batch(self, index: int, prepared: PreparedBatch | None = None) -> dict[str, Tensor]:
        """Training batch ``index``: ``{"left", "right": uint8 [B, 3, H, W], "disparity": float32 [B, 1, H, W]}``
        on the device (the format of ``TrainingDataset`` batches); ``prepared``: ``prepare(index)``, if done."""
        job = prepared if prepared is not None else self.prepare(index)
        out = self.render(job.scene, job.noise_seed, job.plans)
        return {"left": out.left, "right": out.right, "disparity": out.disparity}

    def render(self, scene: SceneBatch, noise_seed: int = 0,
               plans: tuple[list[_Group], list[_Group]] | None = None) -> RenderedBatch:
        """Both views of ``scene`` (any number of scenes of this config's size) with their ground truth.

        Nothing here waits for the device (no host synchronisation), so the caller can prepare the next
        batch on the CPU while this one renders."""
        p = self._tensors(scene)
        plan_left, plan_right = plans if plans is not None else (_plan(scene, False), _plan(scene, True))
        height, width = scene.size
        dev = self.device
        xs = torch.arange(width, dtype=torch.float32, device=dev).view(1, 1, width)
        ys = torch.arange(height, dtype=torch.float32, device=dev).view(1, height, 1)
        shape = (scene.count, height, width)
        x_left = xs.expand(shape)
        d_left, labels = self._zbuffer(p, plan_left, shape, None, ys, right=False)
        _, labels_right = self._zbuffer(p, plan_right, shape, None, ys, right=True)
        nonocc = None
        if self.config.occlusion_mask:
            x_right = x_left - d_left
            d_seen, _ = self._zbuffer(p, _plan(scene, None), shape, x_right, ys, right=True)
            nonocc = ((x_right >= 0) & (x_right <= width - 1) & (d_seen <= d_left + _EPS))[:, None]
        generator = torch.Generator(device=dev).manual_seed(noise_seed)
        left = self._shade_view(p, labels, x_left, ys, 0, generator)
        right = self._shade_view(p, labels_right, x_left, ys, 1, generator)
        return RenderedBatch(left, right, d_left[:, None], nonocc, labels, labels_right)

    # --- geometry -------------------------------------------------------------------------------------
    def _tensors(self, scene: SceneBatch) -> dict[str, Tensor | np.ndarray]:
        dev = self.device
        arrays = {f.name: getattr(scene, f.name) for f in dataclasses.fields(scene)
                  if isinstance(getattr(scene, f.name), np.ndarray)}
        out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev, non_blocking=True) for k, v in arrays.items()}
        out["texmap"] = out["texmap"].flatten(-2)
        columns = [out[name].float() if out[name].dim() == 3 else out[name].float()[..., None] for name in _TABLE]
        out["table"] = torch.cat(columns, -1).flatten(0, 1)
        out["blur_max"] = scene.blur.max(0)  # decisions from the CPU copy: no device syncs
        out["highlights"] = bool((scene.specular[..., 3] > 0).any())
        return out

    def _zbuffer(self, p: dict[str, Tensor], plan: list[_Group], shape: tuple[int, int, int],
                 xq: Tensor | None, ys: Tensor, right: bool) -> tuple[Tensor, Tensor]:
        """Max of disparity over the layers: the nearest disparity [B, H, W] and its layer [B, H, W], on the
        pixel grid (``xq`` None: each layer only in its window) or at view positions ``xq`` [B, H, W]."""
        count, height, width = shape
        layers = p["active"].shape[1]
        cand = torch.full((count * layers, height, width), -math.inf, device=self.device)
        flat = cand.view(-1)
        for group in plan:
            slots = torch.from_numpy(group.slots).to(self.device, non_blocking=True)
            if xq is None:
                offsets = torch.from_numpy(group.offsets).to(self.device, non_blocking=True)
                x = offsets[:, 0, None, None] + torch.arange(group.width, device=self.device).view(1, 1, -1)
                y = offsets[:, 1, None, None] + torch.arange(group.height, device=self.device).view(1, -1, 1)
                values = self._candidates(p, group.kind, slots, x.float(), y.float(), right)
                flat[(slots[:, None, None] * height + y) * width + x] = values
            else:
                cand[slots] = self._candidates(p, group.kind, slots, xq[slots // layers], ys, right)
        best, label = cand.view(count, layers, height, width).max(dim=1)
        return best, label

    @staticmethod
    def _candidates(p: dict[str, Tensor], kind: str, slots: Tensor, x: Tensor, y: Tensor, right: bool) -> Tensor:
        """Disparity of layers ``slots`` (flat indices) at view positions (x, y), -inf where they are absent."""
        field = _columns(p["field"].flatten(0, 1)[slots])
        ok = None
        if right:
            x, ok = _source_x(field, x, y)
        inside = _in_domain(_columns(p["domain"].flatten(0, 1)[slots]), x, y)
        shape = _contains(kind, _columns(p["shape"].flatten(0, 1)[slots]), x, y)
        inside = inside & shape if shape is not None else inside
        inside = inside & ok if ok is not None else inside
        return torch.where(inside, disparity_at(field, x, y), -math.inf)

    # --- appearance -----------------------------------------------------------------------------------
    def _shade_view(self, p: dict[str, Tensor], labels: Tensor, xs: Tensor, ys: Tensor, view: int,
                    generator: torch.Generator) -> Tensor:
        """The visible layers' colours at view positions ``xs`` (labels from the z-buffer), then the camera."""
        count, height, width = labels.shape
        layers = p["active"].shape[1]
        rows = (torch.arange(count, device=labels.device).view(count, 1, 1) * layers + labels).view(-1)
        # the visible layer's parameters, one row of the packed table per pixel, [B, H, W] each
        picked = p["table"].index_select(0, rows).view(count, height, width, -1).unbind(-1)

        def winner(name: str) -> list[Tensor]:
            start, stop = _TABLE[name]
            return list(picked[start:stop])

        field = winner("field")
        x = _source_x(field, xs, ys)[0] if view == 1 else xs
        m = winner("texmap")
        tile = winner("tile")[0].long()
        size = self.tile_size
        tx = reflect(m[0] * x + m[1] * ys + m[2], size) + (tile % self.atlas_cols) * size
        ty = reflect(m[3] * x + m[4] * ys + m[5], size) + torch.div(tile, self.atlas_cols, rounding_mode="floor") * size
        atlas_h, atlas_w = self.atlas.shape[-2:]
        grid = torch.stack([tx * (2 / (atlas_w - 1)) - 1, ty * (2 / (atlas_h - 1)) - 1], -1)
        texture = F.grid_sample(self.atlas, grid.view(1, count * height, width, 2).float(), mode="bilinear",
                                padding_mode="border", align_corners=True)
        texture = texture.view(3, count, height, width).permute(1, 0, 2, 3)
        mean = self.means[tile].permute(0, 3, 1, 2)
        contrast = winner("contrast")[0][:, None]
        tint = torch.stack(winner("tint"), 1)
        light = [c.view(count, 1, 1) for c in p["light"].unbind(-1)]
        shade = shading(field, x, ys, light, p["ambient"].view(count, 1, 1), float(self.config.size[1]),
                        (width / 2, height / 2))
        gain = tint * shade[:, None]
        if view == 1:
            gain = gain * winner("gain_right")[0][:, None]
        image = (mean + contrast * (texture - mean)) * gain
        if p["highlights"]:
            image = image + self._highlights(winner("specular"), field, xs, ys, view)[:, None]
        return self._camera(image, p, view, generator)

    @staticmethod
    def _highlights(spec: list[Tensor], field: list[Tensor], xs: Tensor, ys: Tensor, view: int) -> Tensor:
        """Each visible surface's Gaussian highlight (it moves on the surface between the views)."""
        hx, hy, sigma, amp, shift = spec
        if view == 1:
            hx = hx - disparity_at(field, hx, hy) + shift
        r2 = (xs - hx) ** 2 + (ys - hy) ** 2
        return torch.where(amp > 0, 255 * amp * torch.exp(-r2 / (2 * sigma.clamp_min(1e-3) ** 2)), 0.0)

    def _camera(self, image: Tensor, p: dict[str, Tensor], view: int, generator: torch.Generator) -> Tensor:
        """Exposure/white balance/gamma/bias, blur, noise of one view; float [B, 3, H, W] -> uint8."""
        count = image.shape[0]
        gain = (p["exposure"][:, view, None] * p["white"][:, view]).view(count, 3, 1, 1)
        image = tone(image, gain, p["gamma"][:, view].view(count, 1, 1, 1), p["bias"][:, view].view(count, 1, 1, 1))
        sigma = p["blur"][:, view]
        largest = float(p["blur_max"][view])
        if largest > 0:
            image = _blur(image, sigma, largest)
        std = p["noise"][:, view].view(count, 1, 1, 1) * 255
        noise = torch.randn(image.shape, generator=generator, device=image.device)
        return (image + std * noise).round_().clamp_(0, 255).to(torch.uint8)


def _blur(image: Tensor, sigma: Tensor, largest: float) -> Tensor:
    """Separable Gaussian blur of each image [B, 3, H, W] with its own ``sigma`` [B] (0 = unchanged; at most
    ``largest``), kernel radius about 4 sigma as OpenCV's for float images, mirrored borders."""
    count, channels, height, width = image.shape
    radius = max(1, math.ceil(4 * largest))
    radius = min(radius, height - 1, width - 1)
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    s = sigma.clamp_min(1e-6)[:, None]
    kernel = torch.exp(-(taps[None] ** 2) / (2 * s * s))
    kernel = torch.where((sigma > 0)[:, None], kernel, (taps == 0).to(image.dtype)[None])
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)
    x = F.pad(image.reshape(1, count * channels, height, width), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(-1, 1, 1, 2 * radius + 1), groups=count * channels)
    x = F.conv2d(x, kernel.view(-1, 1, 2 * radius + 1, 1), groups=count * channels)
    return x.view(count, channels, height, width)


class DeviceBatches:
    """Training batches rendered on the device, for ``data.render_on_device``.

    ``batch(n)`` -> ``{"left", "right": uint8 [B, 3, H, W], "disparity": float32 [B, 1, H, W]}``, a pure
    function of (config seed, ``stream``, n). On CUDA ``ahead`` batches (by default about 2^26 pixels, e.g.
    512 pairs of 256 x 512) are rendered in one call (fewer, larger kernels) and handed out in turn; the
    scenes of the next call are drawn on the CPU while the device renders the current one.
    ``atlas_refresh`` > 0: a fresh texture atlas (generation ``pairs so far // atlas_refresh``, counted at the
    start of each render call) every ``atlas_refresh`` pairs, so that a long run does not see the same
    textures throughout (each rebuild costs the CPU about a second). ``augment``: CroCo-Stereo augmentation
    on the device (``DeviceAugment``; flip, right-view perturbation, colour), seeded by n. ``len()`` is the
    config's nominal epoch length (in pairs), so epochs are counted as for a dataset.
    """

    def __init__(self, config: SyntheticConfig, batch_size: int, device: torch.device | str = "cpu",
                 stream: int = 0, ahead: int | None = None, atlas_refresh: int = 0,
                 augment: AugmentConfig | None = None) -> None:
        device = torch.device(device)
        if ahead is None:
            pixels = batch_size * config.size[0] * config.size[1]
            ahead = max(1, PIXELS_PER_CALL // pixels) if device.type == "cuda" else 1
        if atlas_refresh < 0:
            raise ValueError(f"atlas_refresh must be >= 0 (pairs; 0 = never), got {atlas_refresh}")
        self.config, self.batch_size, self.ahead, self.atlas_refresh = config, batch_size, ahead, atlas_refresh
        self.renderer = DeviceRenderer(config, batch_size * ahead, device, stream)
        self.augment = DeviceAugment(augment) if augment is not None else None
        self._generation = 0
        self._cached: tuple[int, dict[str, Tensor]] | None = None
        self._next: tuple[int, PreparedBatch] | None = None

    def __len__(self) -> int:
        return self.config.length

    def batch(self, index: int) -> dict[str, Tensor]:
        group, slot = divmod(index, self.ahead)
        if self._cached is None or self._cached[0] != group:
            generation = group * self.ahead * self.batch_size // self.atlas_refresh if self.atlas_refresh else 0
            if generation != self._generation:
                c = self.config
                self.renderer.load_atlas(build_atlas(c.seed, c.atlas_tiles, c.atlas_tile_size, generation))
                self._generation = generation
            ready = self._next[1] if self._next is not None and self._next[0] == group else None
            self._cached = (group, self.renderer.batch(group, ready))
            self._next = (group + 1, self.renderer.prepare(group + 1))  # on the CPU while the device renders
        part = slice(slot * self.batch_size, (slot + 1) * self.batch_size)
        batch = {key: value[part] for key, value in self._cached[1].items()}
        if self.augment is not None:
            rng = np.random.default_rng([self.config.seed, 0xA06, self.renderer.stream, index])
            batch = self.augment(batch, rng)
        return batch

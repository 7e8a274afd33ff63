"""Batched weather with torch, on CPU or GPU tensors, from the same per-image plans.

:func:`apply_weather_batch` samples one :class:`~mcgf.weather.plan.WeatherPlan` per image
(NumPy, on the host; plans can also be sampled in DataLoader workers and passed in) and
renders them with torch ops vectorised over the batch: images are grouped by condition,
and within a group every stage runs once for all its images (particle layers are
processed layer index by layer index, with per-image kernels through grouped
convolutions and per-image geometry through ``grid_sample``). The maths mirrors the
OpenCV renderer step for step, so a batch gives the pixels :func:`~mcgf.weather.apply_weather`
gives for each image, up to interpolation rounding (a grey level or two, mostly where
the uint8 path rounds in an 8-bit colour space). Canvas and kernel sizes never depend on
which other images share the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mcgf.weather.arrays import check_float_range
from mcgf.weather.blur import MotionBlurStage
from mcgf.weather.colorspace import SPACES, adjust_brightness
from mcgf.weather.conditions import CLEAN, check_condition, check_dark_variant
from mcgf.weather.fog import CloudStage
from mcgf.weather.kernels import pad_kernel
from mcgf.weather.particles import (
    RAIN_OPACITY,
    RainStage,
    SnowStage,
    snow_canvas_shape,
)
from mcgf.weather.photometric import PhotometricStage
from mcgf.weather.plan import WeatherPlan, sample_plan


def sample_plans(
    conditions: Sequence[str],
    *,
    seeds: Sequence[int],
    keys: Sequence[str],
    height: int,
    width: int,
    dark_variant: str = "train",
) -> list[WeatherPlan]:
    """One plan per image (the host-side half of :func:`apply_weather_batch`)."""
    return [
        sample_plan(c, seed=s, key=k, height=height, width=width, dark_variant=dark_variant)
        for c, s, k in zip(conditions, seeds, keys, strict=True)
    ]


def apply_weather_batch(
    images: torch.Tensor,
    conditions: str | Sequence[str],
    *,
    seed: int | Sequence[int],
    keys: Sequence[str],
    dark_variant: str = "train",
    plans: Sequence[WeatherPlan] | None = None,
) -> torch.Tensor:
    """Render weather on a batch of RGB images.

    Args:
        images: (B, 3, H, W) tensor, uint8 (0..255) or floating point (0..1; NaN,
            infinity and values beyond 0.5 outside are refused), on any device; the
            result has the same dtype and device.
        conditions: one condition for all images or one per image.
        seed: one seed for all images or one per image.
        keys: the stable key of each image (e.g. ``ImageRecord.key``).
        dark_variant: ``"train"`` or ``"test"``.
        plans: optional pre-sampled plans (e.g. from :func:`sample_plans` in workers);
            when given, ``conditions``/``seed``/``keys`` are only checked for length.
    """
    _check_images(images)
    b, _, h, w = images.shape
    if isinstance(keys, str):  # a str is a sequence too: of one-letter keys
        raise TypeError(f"keys must be a sequence of strings, one per image, got the string {keys!r}")
    conds = [conditions] * b if isinstance(conditions, str) else list(conditions)
    seeds = [seed] * b if isinstance(seed, (int, np.integer)) else list(seed)  # type: ignore[arg-type]
    if not (len(conds) == len(seeds) == len(keys) == b):
        raise ValueError(
            f"need one condition, seed and key per image: got {len(conds)}, {len(seeds)}, "
            f"{len(keys)} for {b} images"
        )
    for c in conds:
        check_condition(c)
    check_dark_variant(dark_variant)
    if plans is None:
        plans = sample_plans(conds, seeds=seeds, keys=keys, height=h, width=w,
                             dark_variant=dark_variant)
    elif len(plans) != b or any(
        p.condition != c or (p.height, p.width) != (h, w) for p, c in zip(plans, conds, strict=True)
    ):
        raise ValueError("plans must match the images' conditions and size, one per image")

    scale = 1.0 if images.dtype == torch.uint8 else 255.0
    x = images.to(torch.float32) * scale
    out = x.clone()
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(conds):
        groups.setdefault(c, []).append(i)
    for cond, idx in groups.items():
        if cond == CLEAN:
            continue
        sub = x[idx]
        stage_lists = [plans[i].stages for i in idx]
        for s in range(len(stage_lists[0])):
            stages = [st[s] for st in stage_lists]
            if images.dtype == torch.uint8 and isinstance(stages[0], SnowStage):
                sub = sub.clamp(0.0, 255.0).round_()  # as the OpenCV path (see render_stages)
            sub = _RENDERERS[type(stages[0])](sub, stages)
        out[idx] = sub
    out = out.clamp_(0.0, 255.0)
    if images.dtype == torch.uint8:
        return out.round_().to(torch.uint8)
    return (out / 255.0).to(images.dtype)


# --------------------------------------------------------------------------- helpers


def _check_images(images: torch.Tensor) -> None:
    """Refuse what :func:`apply_weather_batch` does not take, with the reason."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    if images.dtype.is_floating_point and images.numel():
        # As apply_weather: 0..255 data as float would be clamped to white.
        check_float_range(float(images.amin()), float(images.amax()), "floating point images")


def _t(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.device)


def _stack(arrays: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    return _t(np.stack(arrays).astype(np.float32), like)


def _kernels(kernels: list[np.ndarray], like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    kh = max(k.shape[0] for k in kernels)
    kw = max(k.shape[1] for k in kernels)
    weight = _stack([pad_kernel(k, (kh, kw)) for k in kernels], like)[:, None]
    return weight, kh, kw


def _grouped_filter(canvas: torch.Tensor, weight: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Per-image 2-D correlation with zero borders (OpenCV's ``filter2D``, constant border)."""
    n, h, w = canvas.shape
    out = F.conv2d(canvas.reshape(1, n, h, w), weight, padding=(kh // 2, kw // 2), groups=n)
    return out.reshape(n, h, w)


def _scatter(
    cells: list[np.ndarray], mass: list[np.ndarray], shape: tuple[int, int], like: torch.Tensor
) -> torch.Tensor:
    """Sum each image's particles into its own zeroed canvas of ``shape``."""
    size = shape[0] * shape[1]
    offsets = [c.astype(np.int64) + i * size for i, c in enumerate(cells)]
    canvas = torch.zeros(len(cells) * size, dtype=torch.float32, device=like.device)
    canvas.index_add_(0, _t(np.concatenate(offsets), like), _t(np.concatenate(mass), like))
    return canvas.reshape(len(cells), *shape)


def _place(
    cells: list[np.ndarray], values: list[np.ndarray], shape: tuple[int, int], like: torch.Tensor
) -> torch.Tensor:
    """Write each image's values into its own zeroed canvas of ``shape`` (a cell written
    twice keeps the last value, as NumPy's assignment)."""
    size = shape[0] * shape[1]
    flat = np.concatenate([c.astype(np.int64) + i * size for i, c in enumerate(cells)])
    vals = np.concatenate(values).astype(np.float32)
    # The last write of a cell wins: keep each cell's last occurrence only. Cells of
    # different images never collide, so one pass over the whole batch does it.
    _, last = np.unique(flat[::-1], return_index=True)
    keep = len(flat) - 1 - last
    canvas = torch.zeros(len(cells) * size, dtype=torch.float32, device=like.device)
    canvas[_t(flat[keep], like)] = _t(vals[keep], like)
    return canvas.reshape(len(cells), *shape)


def _layer_groups(stages: Sequence[RainStage | SnowStage]) -> list[tuple[list[int], list]]:
    """For each layer index, the images having that layer and their layers."""
    depth = max((len(s.layers) for s in stages), default=0)
    out = []
    for j in range(depth):
        sel = [i for i, s in enumerate(stages) if len(s.layers) > j]
        out.append((sel, [stages[i].layers[j] for i in sel]))
    return out


# --------------------------------------------------------------------------- stages


def _render_cloud(x: torch.Tensor, stages: list[CloudStage]) -> torch.Tensor:
    size = x.shape[-2:]
    alpha = F.interpolate(_stack([s.alpha for s in stages], x)[:, None], size=size,
                          mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    fog = F.interpolate(_stack([s.intensity for s in stages], x)[:, None], size=size,
                        mode="bicubic", align_corners=False).clamp_(0.0, 255.0)
    return x + alpha * (fog - x)


def _render_rain(x: torch.Tensor, stages: list[RainStage]) -> torch.Tensor:
    c = stages[0].canvas
    shape = (c.rows, c.cols)
    trans = torch.ones(len(stages), *shape, dtype=torch.float32, device=x.device)
    for sel, layers in _layer_groups(stages):
        drops = _scatter([lay.cells for lay in layers], [lay.mass for lay in layers], shape, x)
        gate = F.interpolate(_stack([lay.gate for lay in layers], x)[:, None], size=shape,
                             mode="bilinear", align_corners=False)[:, 0]
        weight, kh, kw = _kernels([lay.kernel for lay in layers], x)
        streaks = _grouped_filter(drops * gate, weight, kh, kw)
        trans[sel] *= (1.0 - RAIN_OPACITY * streaks).clamp_(min=0.0)
    inside = trans[:, c.margin_rows : c.margin_rows + c.image_rows, c.margin_x : c.margin_x + c.width]
    side = torch.tensor([s.soften for s in stages], dtype=inside.dtype, device=inside.device)
    if bool((side > 0).any()) and inside.shape[-1] > 1:
        # The CPU path's 3-tap cross-streak filter, mirrored borders (BORDER_REFLECT_101).
        padded = F.pad(inside[:, None], (1, 1, 0, 0), mode="reflect")[:, 0]
        w = side.reshape(-1, 1, 1)
        inside = w * padded[..., :-2] + (1.0 - 2.0 * w) * padded[..., 1:-1] + w * padded[..., 2:]
    full = F.interpolate(inside[:, None], size=(c.height, c.width), mode="bilinear",
                         align_corners=False)
    grey = torch.tensor([s.grey for s in stages], dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    return (x - grey) * full + grey


def _render_snow(x: torch.Tensor, stages: list[SnowStage]) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    shapes = [snow_canvas_shape(s, h, w) for s in stages]
    for shape in dict.fromkeys(shapes):  # usually one canvas shape for the whole batch
        idx = [i for i, s in enumerate(shapes) if s == shape]
        maps = _snow_maps([stages[i] for i in idx], shape, x)
        factor = shape[0] // h
        if shape[0] < h or shape[1] < w:  # as cv2.resize(INTER_CUBIC) of the uint8 maps
            maps = F.interpolate(maps, size=(h, w), mode="bicubic", align_corners=False)
            maps = maps.round_().clamp_(0.0, 255.0)
        sub = x[idx]
        if factor > 1:  # a supersampled canvas: blend each sub-pixel, then average
            sub = sub.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        res = torch.maximum((sub + maps[:, None, 0]).clamp_(0.0, 255.0), maps[:, None, 1])
        if factor > 1:
            res = F.avg_pool2d(res, factor)
        out[idx] = res
    return out


def _snow_maps(stages: list[SnowStage], shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(A, B) of each stage on its canvas of ``shape``, as (n, 2, ch, cw) whole grey levels."""
    n = len(stages)
    h, w = shape
    add = torch.zeros(n, h, w, device=like.device)
    floor = torch.zeros(n, h, w, device=like.device)
    for sel, layers in _layer_groups(stages):
        m = len(sel)
        gh = np.array([lay.grid_shape[0] for lay in layers])
        gw = np.array([lay.width for lay in layers])
        big = (int(gh.max()), int(gw.max()))
        canvas = _place([lay.rows * big[1] + lay.cols for lay in layers],
                        [lay.value for lay in layers], big, like)
        # Rounded to whole grey levels after each filter, as OpenCV's uint8 filter2D.
        weight, kh, kw = _kernels([lay.profile[None, :] for lay in layers], like)
        canvas = _grouped_filter(canvas, weight, kh, kw).round_().clamp_(0.0, 255.0)
        weight, kh, kw = _kernels([lay.kernel for lay in layers], like)
        canvas = _grouped_filter(canvas, weight, kh, kw).round_().clamp_(0.0, 255.0)
        # Replicate each canvas's own border into the padding, as OpenCV's resize does.
        rows = torch.minimum(torch.arange(big[0], device=like.device)[None], _t(gh - 1, like)[:, None])
        cols = torch.minimum(torch.arange(big[1], device=like.device)[None], _t(gw - 1, like)[:, None])
        canvas = canvas.gather(1, rows[:, :, None].expand(m, big[0], big[1]))
        canvas = canvas.gather(2, cols[:, None, :].expand(m, big[0], big[1]))
        # Snow canvas pixel centre -> own-canvas coordinate -> normalised over the padding.
        xs = (torch.arange(w, device=like.device) + 0.5) / w
        ys = (torch.arange(h, device=like.device) + 0.5) / h
        gx = xs[None, :] * _t(2.0 * gw / big[1], like)[:, None].float() - 1.0
        gy = ys[None, :] * _t(2.0 * gh / big[0], like)[:, None].float() - 1.0
        where = torch.stack(
            [gx[:, None, :].expand(m, h, w), gy[:, :, None].expand(m, h, w)], dim=-1
        )
        streaks = F.grid_sample(canvas[:, None], where, mode="bicubic", padding_mode="border",
                                align_corners=False)[:, 0]
        level = streaks.round_().clamp_(0.0, 255.0).long().reshape(m, -1)
        flake = _stack([lay.lut_flake for lay in layers], like).gather(1, level).reshape(m, h, w)
        scale = torch.tensor([lay.glow_scale for lay in layers], device=like.device).reshape(m, 1, 1)
        offset = torch.tensor([lay.glow_offset for lay in layers], device=like.device).reshape(m, 1, 1)
        glow = (flake * scale + offset).abs_().round_().clamp_(max=255.0)
        add[sel] = (add[sel] + glow).clamp_(max=255.0)
        floor[sel] = torch.maximum((floor[sel] + glow).clamp_(max=255.0), flake)
    return torch.stack([add, floor], dim=1)


def _render_photometric(x: torch.Tensor, stages: list[PhotometricStage]) -> torch.Tensor:
    if stages[0].blend:
        x = 0.5 * torch.clamp(x + 100.0, max=255.0) + 0.1 * x
    out = x.clone()
    for space in SPACES:
        sel = [i for i, s in enumerate(stages) if s.space == space]
        if not sel:
            continue

        def column(values: list[float], sel: list[int] = sel) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=x.device).reshape(len(sel), 1, 1)

        mul = column([stages[i].mul for i in sel])
        add = column([stages[i].add for i in sel])
        mul_first = column([float(stages[i].mul_first) for i in sel]) > 0.5
        rgb = x[sel].permute(0, 2, 3, 1) / 255.0
        res = adjust_brightness(rgb, space, mul, add, mul_first)
        out[sel] = res.permute(0, 3, 1, 2) * 255.0
    return out


def _normaliser(width: int, height: int) -> np.ndarray:
    """Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False), as a 3x3 matrix."""
    return np.array([[2.0 / width, 0, 1.0 / width - 1], [0, 2.0 / height, 1.0 / height - 1],
                     [0, 0, 1]])


def _render_motion_blur(x: torch.Tensor, stages: list[MotionBlurStage]) -> torch.Tensor:
    n, ch, h, w = x.shape
    hc = max(s.canvas_shape[0] for s in stages)
    wc = max(s.canvas_shape[1] for s in stages)
    to_image, to_canvas = [], []
    for s in stages:
        a = np.vstack([s.canvas_to_image, [0, 0, 1]])
        to_image.append(_normaliser(w, h) @ a @ np.linalg.inv(_normaliser(wc, hc)))
        to_canvas.append(_normaliser(wc, hc) @ np.linalg.inv(a) @ np.linalg.inv(_normaliser(w, h)))
    theta = _stack([m[:2] for m in to_image], x)
    grid = F.affine_grid(theta, [n, ch, hc, wc], align_corners=False)
    canvas = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    weight, kh, kw = _kernels([s.kernel for s in stages], x)
    weight = weight.repeat_interleave(ch, dim=0)
    blurred = F.conv2d(canvas.reshape(1, n * ch, hc, wc), weight, padding=(kh // 2, kw // 2),
                       groups=n * ch).reshape(n, ch, hc, wc)
    theta = _stack([m[:2] for m in to_canvas], x)
    grid = F.affine_grid(theta, [n, ch, h, w], align_corners=False)
    return F.grid_sample(blurred, grid, mode="bilinear", padding_mode="border", align_corners=False)


_RENDERERS: dict[type, Callable[[torch.Tensor, list], torch.Tensor]] = {
    CloudStage: _render_cloud,
    RainStage: _render_rain,
    SnowStage: _render_snow,
    PhotometricStage: _render_photometric,
    MotionBlurStage: _render_motion_blur,
}

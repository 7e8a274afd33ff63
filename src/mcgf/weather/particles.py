"""Rain and snow: layers of falling particles, after the recipe's Rain/Snowflakes model.

One layer (the recipe's ``RainLayer`` / ``SnowflakesLayer``):

1. particles ("salt") land on a grid whose pitch grows with the drop/flake size
   (grid = image × (1 − size)), each with brightness in [127.5, 255], thinned by an
   8×8 Beta(1, 1 − uniformity) gate;
2. the grid is upsampled to the image, so a particle becomes a blob of one grid cell;
3. a motion blur of length ``speed × image size`` at the layer's angle turns blobs into
   streaks whose weight ramps from 1 at the head to 0 at the tail (snow: ``k`` taps,
   :func:`~mcgf.weather.kernels.recipe_streak_taps`, after a 0.5 px Gaussian);
4. rain: the streak map ``n`` is an opacity ``min(1, 1.3·n/255)`` of grey 240;
   snow: ``n`` goes through a gamma curve (gain from the size uniformity), then is added
   (glow, ``0.1 + 20·speed``) and max-blended (flakes, ``1 + 20·speed``) onto the image.

Each rain/snow augmenter of the recipe applies 1–3 such layers; consecutive augmenters of
one kind form a *stage* here, and layers are composed exactly in closed form so that the
3-channel image is touched once per stage:

* rain layers are alpha blends towards one grey, so ``n`` layers reduce to one blend with
  transmittance ``T = Π(1 − a_i)`` (order-free);
* snow layer ``x → max(min(x + a_i, 255), b_i)`` composes into
  ``x → max(min(x + A, 255), B)`` with ``A = Σ a_i`` and ``B`` updated as
  ``B ← max(min(B + a_i, 255), b_i)`` in layer order.

Speed (why not the straightforward route): rain streaks are long (20–30 px) but their
weight ramps linearly along the streak, so the streak map is smooth along the fall
direction. Rain is therefore drawn on a canvas whose rows are ~4 px tall (five rows per
shortest streak) and full-resolution across; drops are placed as sparse points
(vectorised, no per-drop loop), blurred with a small rasterised line kernel
(:func:`~mcgf.weather.kernels.line_kernel`) and the stage's transmittance is stretched to
the image once.

Snow, against the recipe (engine version 4): the recipe upsamples its flake grid
bicubically into uint8 (each flake becomes the positive lobe of the cubic kernel, one
cell wide), blurs it by a 0.5 px Gaussian and then by a rotated ramp of ``k`` taps at
full resolution (a dense 4–13 ms convolution per layer). Blurring on the flake grid
instead (engine 3) cannot keep a tilted streak thin: between grid columns the bicubic
upsampling of a ridge peaks at 0.75 of its height, and short streaks lose the sub-cell
blur; measured per layer that was −41 % to +340 % high-frequency energy. Here a layer is
drawn on a *streak canvas* of the grid's rows and three columns per cell (at most one per
pixel): flakes are points there, :func:`~mcgf.weather.kernels.flake_profile` gives them
their lobe across, :func:`~mcgf.weather.kernels.streak_kernels` places every tap of the
motion blur at its own column with its vertical lobe weight on each grid row, and one
bicubic upsampling in y brings the canvas to the snow canvas, where the recipe's
truncating tables (:func:`snow_tables`) turn it into glow and flakes. The layers of a
stage are composed on a canvas of 1 px pitch at 512 px (the image itself from 256 to
512 px; below 256 px the image enlarged, see :data:`SNOW_MIN_CANVAS`): per layer, two
small canvas filters, one upsampling, a table look-up, a scaling and three saturating
uint8 operations.

Rain, against the recipe (``benchmarks/weather_fidelity.py``): the recipe's bicubic
upsampling of its sparse uint8 drop grid clips the kernel's negative lobes, so every
drop carries ~20 % more mass (:data:`RAIN_DROP_GAIN`) spread over ~2 px
(:data:`RAIN_DROP_SIGMA`, applied once per stage as a 3-tap filter across the streaks),
and the recipe truncates to uint8 after every layer (:func:`floored_grey`).

Sampling draws each kind of random quantity for all layers of a stage in one NumPy call
(parameters, drop counts, drop positions, gates): a rain stage has ~200 000 drops, whose
generation and summation dominate its cost.

Resolution: the grid pitch, streak length and the recipe's 0.5 px pre-blur of flakes are
defined at 512 px and scaled by :func:`~mcgf.weather.kernels.scale_factor`; particle counts
are per grid cell, so a 256 px rendering has the same particles, half as large. Snow
flakes would be smaller than a pixel below 256 px: the stage is then drawn on an enlarged
canvas and averaged back (:func:`snow_supersampling`).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from mcgf.weather.arrays import expand, owned_float, scratch, subtract_from, with_scalar
from mcgf.weather.kernels import (
    REFERENCE_SIZE,
    flake_profile,
    line_kernel,
    recipe_streak_taps,
    scale_factor,
    streak_kernels,
)
from mcgf.weather.noise import (
    SALT_BITS,
    SALT_LEVELS,
    beta_gate,
    salt_levels,
    salt_values,
)
from mcgf.weather.rng import Range, range_max, range_min

#: Rain drop opacity per grey level of the streak map, and the drops' grey level. The
#: recipe derives the grey from the streak map as ``110 + 130 % sum``, which is 240 unless
#: the map's first row is nearly empty; 240 is used throughout.
RAIN_OPACITY = 1.3 / 255.0
RAIN_GREY = 240.0
#: Mass of a drop relative to its salt value × cell area. The recipe upsamples its sparse
#: salt grid bicubically in uint8: the kernel's negative lobes around an isolated drop are
#: clipped to 0, which adds ~20 % (measured with imgaug 0.4.0: 1.25 at density 0.03,
#: 1.20 at 0.08, 1.16 at 0.14) to every drop.
RAIN_DROP_GAIN = 1.2
#: Std (in grid cells) of a drop's cross-section. The positive lobe of the bicubic kernel
#: that spreads the recipe's salt pixel over ~2 image pixels has std 0.40 cells, but
#: filtering the stage's product once (not each layer) and the canvas rows soften more:
#: 0.25 balances the high-frequency energy of rain (+4 %), fog_rain (−3 %) and rain_snow
#: (+4 %) against the recipe (104 views at 512 px, engine 4's snow; 0.2 gave +14 %, +5 %
#: and +10 %, 0.3 −7 %, −13 % and −3 %).
RAIN_DROP_SIGMA = 0.25
#: Canvas rows per shortest possible streak (see module doc).
ROWS_PER_STREAK = 5
#: Resolution of the recipe's density gate over the image.
GATE_CELLS = 8


@dataclass(frozen=True)
class ParticleParams:
    """One rain or snow augmenter of the recipe (applies 1–3 layers)."""

    kind: Literal["rain", "snow"]
    size: Range
    speed: Range
    density: Range
    density_uniformity: tuple[float, float]
    size_uniformity: Range
    angle: Range
    blur_sigma_fraction: Range
    layers: tuple[int, int] = (1, 3)


def rain(drop_size: Range, speed: Range = (0.04, 0.06)) -> ParticleParams:
    """A rain augmenter of the recipe with the given drop size."""
    return ParticleParams(
        "rain", size=drop_size, speed=speed, density=(0.03, 0.14),
        density_uniformity=(0.8, 1.0), size_uniformity=(0.2, 0.5), angle=(-15.0, 15.0),
        blur_sigma_fraction=0.001,
    )


def snow(flake_size: Range, speed: Range = (0.007, 0.03)) -> ParticleParams:
    """A snowflake augmenter of the recipe with the given flake size."""
    return ParticleParams(
        "snow", size=flake_size, speed=speed, density=(0.005, 0.075),
        density_uniformity=(0.3, 0.9), size_uniformity=(0.4, 0.8), angle=(-30.0, 30.0),
        blur_sigma_fraction=(0.0001, 0.001),
    )


# --------------------------------------------------------------------------- rain


@dataclass(frozen=True)
class StreakCanvas:
    """Geometry of the rain canvas: full-resolution columns, coarse rows, and margins.

    Canvas column ``c`` is image column ``c - margin_x``; canvas row ``r`` covers image
    rows ``[(r - margin_rows)·row_pitch, (r - margin_rows + 1)·row_pitch)``.
    """

    height: int
    width: int
    row_pitch: float
    image_rows: int
    margin_rows: int
    margin_x: int

    @property
    def rows(self) -> int:
        return self.image_rows + 2 * self.margin_rows

    @property
    def cols(self) -> int:
        return self.width + 2 * self.margin_x


def streak_canvas(height: int, width: int, params: list[ParticleParams]) -> StreakCanvas:
    """The rain canvas for an image size; it depends only on the recipe's bounds."""
    size = max(height, width)
    shortest = min(range_min(p.speed) for p in params) * size
    longest = max(range_max(p.speed) for p in params) * size
    widest = max(max(abs(range_min(p.angle)), abs(range_max(p.angle))) for p in params)
    drop = scale_factor(height, width) / (1.0 - max(range_max(p.size) for p in params))
    image_rows = max(1, round(height / max(1.0, shortest / ROWS_PER_STREAK)))
    pitch = height / image_rows
    half = longest / 2
    return StreakCanvas(
        height=height, width=width, row_pitch=pitch, image_rows=image_rows,
        margin_rows=math.ceil((half + drop + 2) / pitch),
        margin_x=math.ceil(half * math.sin(math.radians(widest)) + drop + 2),
    )


@dataclass(frozen=True)
class RainLayer:
    """Sampled drops of one layer (flat canvas cells and mass), density gate and kernel."""

    cells: np.ndarray
    mass: np.ndarray
    gate: np.ndarray
    kernel: np.ndarray


@dataclass(frozen=True)
class RainStage:
    """All rain layers of consecutive rain augmenters, on one canvas."""

    canvas: StreakCanvas
    layers: tuple[RainLayer, ...]
    #: Effective grey of the drops (see :func:`floored_grey`).
    grey: float = RAIN_GREY
    #: Side weight ``w`` of the 3-tap horizontal filter ``[w, 1 − 2w, w]`` that gives the
    #: streaks the recipe's soft cross-section (see :func:`cross_blur`).
    soften: float = 0.0


def cross_blur(sigma: float) -> float:
    """Side weight of a 3-tap filter ``[w, 1 − 2w, w]`` with standard deviation ``sigma`` px.

    Applied once to a stage's transmittance on the canvas (columns are image pixels): a
    drop of the recipe is a bicubic blob ~2 px wide, ours a point; filtering the product
    of the layers instead of every layer costs one small pass and differs only where
    streaks of several layers overlap.
    """
    return float(min(0.25, 0.5 * sigma * sigma))


def floored_grey(opacities: list[float]) -> float:
    """The drops' grey that reproduces, on average, the recipe's flooring between layers.

    The recipe stores every rain layer's blend as uint8 (truncating: −0.5 grey level on
    average where drops fall), so after layers with mean opacities ``a_i`` the image is
    darker by ``0.5·Σ_i Π_{j>i}(1 − a_j)``. The closed-form blend has no such steps; a
    grey lower by that loss divided by the stage's mean opacity ``1 − Π(1 − a_i)`` gives
    the same mean.
    """
    keep, loss = 1.0, 0.0
    for a in opacities:
        keep *= 1.0 - a
        loss = loss * (1.0 - a) + 0.5
    opacity = 1.0 - keep
    return RAIN_GREY - loss / opacity if opacity > 1e-3 else RAIN_GREY


def _layer_params(
    rng: np.random.Generator, augmenters: list[ParticleParams]
) -> list[ParticleParams]:
    """The augmenter of each layer of a stage: 1–3 layers per augmenter, in order."""
    counts = rng.integers(
        [p.layers[0] for p in augmenters], [p.layers[1] + 1 for p in augmenters]
    ).tolist()
    return [p for p, count in zip(augmenters, counts, strict=True) for _ in range(count)]


@functools.lru_cache(maxsize=256)
def _bounds(params: ParticleParams, field: str) -> tuple[float, float]:
    """(low, high) of one parameter of an augmenter (cached: a recipe has a few)."""
    value = getattr(params, field)
    return range_min(value), range_max(value)


def _draw_layers(
    rng: np.random.Generator, params: list[ParticleParams], fields: tuple[str, ...]
) -> list[list[float]]:
    """Each layer's values of ``fields``, uniform in its augmenter's ranges: [field][layer].

    One ``rng.random`` call for the whole stage; the per-layer scalars stay Python floats
    (NumPy calls on one-element arrays cost more than the arithmetic).
    """
    u = rng.random((len(fields), len(params))).tolist()
    out = []
    for field, column in zip(fields, u, strict=True):
        bounds = [_bounds(p, field) for p in params]
        out.append([lo + (hi - lo) * x for (lo, hi), x in zip(bounds, column, strict=True)])
    return out


def _slices(counts: list[int]) -> list[slice]:
    """Per-layer slices of a stage's concatenated particle arrays."""
    ends = list(itertools.accumulate(counts))
    return [slice(end - n, end) for n, end in zip(counts, ends, strict=True)]


def sample_rain(
    rng: np.random.Generator, height: int, width: int, augmenters: list[ParticleParams]
) -> RainStage:
    """Draw the layers of consecutive rain augmenters (1–3 layers each).

    Each kind of random quantity is drawn for all layers of the stage at once (a dozen
    NumPy calls per stage instead of a dozen per layer).
    """
    canvas = streak_canvas(height, width, augmenters)
    params = _layer_params(rng, augmenters)
    if not params:
        return RainStage(canvas=canvas, layers=())
    size, angle, speed, density = _draw_layers(rng, params, ("size", "angle", "speed", "density"))
    scale = scale_factor(height, width)
    pitch = [scale / min(max(1.0 - s, 0.001), 1.0) for s in size]
    cells_total = canvas.rows * canvas.cols
    area = cells_total * canvas.row_pitch  # image px² under the canvas
    counts = rng.poisson([d * area / p**2 for d, p in zip(density, pitch, strict=True)]).tolist()
    # One uniform per drop: its integer part picks the canvas cell (a drop sits at the
    # centre of its row; rows are much shorter than streaks), the fraction its brightness.
    # Both come from one integer, exactly as ``salt_values(u - cells)`` would give them:
    # scaling by a power of two is exact, so bits 10+ are the cell, bits 0-9 the level.
    code = rng.random(sum(counts))
    code *= cells_total * SALT_LEVELS
    code = code.astype(np.int64)
    cells = (code >> SALT_BITS).astype(np.int32)
    mass = salt_levels(code & (SALT_LEVELS - 1))
    gate_shape = (
        math.ceil(canvas.rows * canvas.row_pitch * GATE_CELLS / height) + 1,
        math.ceil(canvas.cols * GATE_CELLS / width) + 1,
    )
    # One density uniformity per layer, as the recipe's gate draws it.
    (evenness,) = _draw_layers(rng, params, ("density_uniformity",))
    gates = beta_gate(rng, (len(params), *gate_shape), np.array(evenness))
    layers = []
    opacities: list[float] = []
    for i, part in enumerate(_slices(counts)):
        mass[part] *= np.float32(RAIN_DROP_GAIN * pitch[i] * pitch[i] / canvas.row_pitch)
        # Drops wider than a canvas column (images above 512 px) are thickened in the kernel.
        kernel = line_kernel(
            speed[i] * max(height, width), angle[i], 1.0, 0.0, pitch=(1.0, canvas.row_pitch),
            footprint=pitch[i] - 1.0 if pitch[i] > 1.25 else 0.0,
        )
        layers.append(RainLayer(cells=cells[part], mass=mass[part], gate=gates[i], kernel=kernel))
        # Mean opacity of the layer: its streak mass per image pixel (times the mean gate).
        opacities.append(min(1.0, RAIN_OPACITY * float(mass[part].sum(dtype=np.float64))
                             * canvas.row_pitch * float(gates[i].mean()) / area))
    return RainStage(canvas=canvas, layers=tuple(layers), grey=floored_grey(opacities),
                     soften=cross_blur(RAIN_DROP_SIGMA * scale / (1.0 - float(np.mean(size)))))


def gate_map(gate: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A gate grid stretched over a canvas of ``shape`` (its nodes span the canvas)."""
    return cv2.resize(gate, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def rain_transmittance(stage: RainStage) -> np.ndarray:
    """Full-resolution fraction of the image left visible by all drops, Π(1 − a_i).

    Returns a scratch buffer (valid until the next call in this thread).
    """
    c = stage.canvas
    shape = (c.rows, c.cols)
    trans = scratch("rain.trans", shape)
    trans.fill(1.0)
    drops = scratch("rain.drops", shape)
    streaks = scratch("rain.streaks", shape)
    for layer in stage.layers:
        drops.fill(0.0)
        np.add.at(drops.reshape(-1), layer.cells, layer.mass)
        cv2.multiply(drops, gate_map(layer.gate, shape), dst=drops)
        # 1 - min(1, k·n) = max(0, 1 - k·n); the filter computes 1 - k·n in its pass.
        cv2.filter2D(drops, -1, layer.kernel * np.float32(-RAIN_OPACITY), dst=streaks,
                     delta=1.0, borderType=cv2.BORDER_CONSTANT)
        with_scalar("max", streaks, 0.0, dst=streaks)
        cv2.multiply(trans, streaks, dst=trans)
    inside = trans[c.margin_rows : c.margin_rows + c.image_rows, c.margin_x : c.margin_x + c.width]
    if stage.soften > 0:
        w = stage.soften
        inside = cv2.filter2D(inside, -1, np.array([[w, 1.0 - 2.0 * w, w]], np.float32),
                              borderType=cv2.BORDER_REFLECT_101)
    out = scratch("rain.trans_full", (c.height, c.width))
    return cv2.resize(inside, (c.width, c.height), dst=out, interpolation=cv2.INTER_LINEAR)


def render_rain(image: np.ndarray, stage: RainStage) -> np.ndarray:
    """Blend a rain stage over an (H, W, C) image of grey levels (see :func:`owned_float`)."""
    height, width, _ = image.shape
    trans = rain_transmittance(stage)
    opacity = subtract_from(1.0, trans, dst=scratch("rain.opacity", (height, width)))
    x = owned_float(image)
    # One pass with per-pixel weights, no expanded weight map (OpenCV's 8-bit blendLinear
    # is slower than this float one, so uint8 input is widened first as before).
    grey = scratch("rain.grey", x.shape)
    grey.fill(stage.grey)
    return cv2.blendLinear(x, grey, trans, opacity, dst=x)


# --------------------------------------------------------------------------- snow


@dataclass(frozen=True)
class SnowLayer:
    """Sampled flakes of one layer, where the renderer draws them, and their brightness.

    A layer is drawn on a *streak canvas* of ``grid_shape[0]`` rows (the flake grid's
    rows) by ``width`` columns (at least three per grid cell, at most the snow canvas's):
    flake ``i`` sits at ``(rows[i], cols[i])`` with grey level ``value[i]``; ``profile``
    (a row kernel) gives it the cubic lobe of its cell across, ``kernel`` draws the
    streak (see :func:`~mcgf.weather.kernels.streak_kernel`), and an upsampling in y
    brings the canvas to the snow canvas. ``lut_flake[n]`` maps the resulting streak map
    to the flake the image is max-blended with, and ``glow_scale·flake + glow_offset``
    (rounded) is the glow added to it (see :func:`snow_tables`).
    """

    grid_shape: tuple[int, int]
    width: int
    rows: np.ndarray
    cols: np.ndarray
    value: np.ndarray
    profile: np.ndarray
    kernel: np.ndarray
    lut_flake: np.ndarray
    glow_scale: float
    glow_offset: float


@dataclass(frozen=True)
class SnowStage:
    """All snow layers of consecutive snowflake augmenters, in application order."""

    layers: tuple[SnowLayer, ...]


#: Streak-canvas columns per flake-grid cell (at most one per canvas pixel): a streak
#: tilted between columns is split linearly between them, which softens it by a fraction
#: of a column; a third of a cell keeps flakes as sharp as the recipe's (two per cell
#: measurably softened them).
COLUMNS_PER_CELL = 3
#: Pitch (px at 512 px) of the canvas on which a snow stage's layers are composed: full
#: resolution, as the recipe (a 2 px canvas softened flakes measurably).
SNOW_CANVAS_PITCH = 1.0
#: Smallest side (px) of a snow canvas. Below it the flake grids would be finer than the
#: image (flakes smaller than a pixel): the stage is then drawn on the image enlarged an
#: integer number of times and averaged back, so the recipe's saturating flakes keep
#: their light instead of being dimmed before the gamma curve.
SNOW_MIN_CANVAS = 256
#: Grey levels 0..255 as the recipe's float32 fractions, the argument of the gamma curve.
_LEVELS = np.linspace(0.0, 1.0, 256, dtype=np.float32)


def snow_grid_shape(height: int, width: int, size: float) -> tuple[int, int]:
    """Grid of one snow layer: ``(1 − size)`` × the image at 512 px (``int`` as the recipe)."""
    pitch = scale_factor(height, width) / min(max(1.0 - size, 0.001), 1.0)
    return max(1, int(height / pitch)), max(1, int(width / pitch))


def snow_supersampling(grids: list[tuple[int, int]], height: int, width: int) -> int:
    """How many times the image is enlarged for a snow stage (1: not at all; see
    :data:`SNOW_MIN_CANVAS`): enough for a side of 256 px and for every layer's grid."""
    need = max([SNOW_MIN_CANVAS / max(height, width), *(g[0] / height for g in grids),
                *(g[1] / width for g in grids)])
    return max(1, math.ceil(need - 1e-9)) if max(height, width) < SNOW_MIN_CANVAS else 1


def _canvas_of(grids: list[tuple[int, int]], height: int, width: int) -> tuple[int, int]:
    factor = snow_supersampling(grids, height, width)
    if factor > 1:
        return height * factor, width * factor
    pitch = SNOW_CANVAS_PITCH * scale_factor(height, width)
    ch = max([math.ceil(height / pitch), *(g[0] for g in grids)])
    cw = max([math.ceil(width / pitch), *(g[1] for g in grids)])
    return min(height, ch), min(width, cw)


def snow_canvas_shape(stage: SnowStage, height: int, width: int) -> tuple[int, int]:
    """Canvas on which a stage's layers are composed: 1 px pitch at 512 px.

    Never coarser than any layer's grid; finer than the image only below
    :data:`SNOW_MIN_CANVAS` px, by an integer factor (:func:`snow_supersampling`).
    """
    return _canvas_of([lay.grid_shape for lay in stage.layers], height, width)


def snow_tables(uniformity: np.ndarray, speed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flake tables of layers ((layers, 256) uint8) and how their glow follows from them.

    The recipe passes the streak map ``n`` through ``GammaContrast(1 + 2(1 − u))`` (a
    uint8 table, truncated) and multiplies it by ``1 + 5(1 − u)``: ``L``. It adds
    ``L·(0.1 + 20·speed)`` to the image and max-blends ``L·(1 + 20·speed)`` with it,
    truncating each to uint8; on integer images that is adding the glow ``trunc(L·g1)``
    and max-blending the flake ``trunc(L·g2)``. The flake is a table of ``n``; the glow,
    which matters only where the flake is not saturated, is ``round(r·flake + (r − 1)/2)``
    with ``r = g1/g2`` — the expected truncation of ``L·g1`` given the flake, within one
    grey level. Returns (flake tables, r, (r − 1)/2).
    """
    u = np.asarray(uniformity, np.float64)[:, None]
    s = np.asarray(speed, np.float64)[:, None]
    gamma = (_LEVELS[None, :] ** (1.0 + 2.0 * (1.0 - u)).astype(np.float32)) * np.float32(255)
    level = np.clip(gamma, 0, 255).astype(np.uint8).astype(np.float32)
    level = level * (1.0 + 5.0 * (1.0 - u)).astype(np.float32)
    flake = np.clip(level * (1.0 + 20.0 * s).astype(np.float32), 0, 255).astype(np.uint8)
    ratio = ((0.1 + 20.0 * s) / (1.0 + 20.0 * s))[:, 0]
    return flake, ratio, (ratio - 1.0) / 2.0


@functools.lru_cache(maxsize=1024)
def cubic_weights(size: int, source: int) -> np.ndarray:
    """(size, source) weights of ``cv2.resize`` INTER_CUBIC from ``source`` to ``size``
    samples along one axis (replicated border), read-only: row i weighs the sources of
    output i."""
    weights = cv2.resize(np.eye(source, dtype=np.float32), (source, size), interpolation=cv2.INTER_CUBIC)
    weights.flags.writeable = False
    return weights


def sample_snow(
    rng: np.random.Generator, height: int, width: int, augmenters: list[ParticleParams]
) -> SnowStage:
    """Draw the layers of consecutive snowflake augmenters (1–3 layers each).

    Each kind of random quantity is drawn for all layers of the stage at once, and
    their streak kernels are built in one pass.
    """
    params = _layer_params(rng, augmenters)
    if not params:
        return SnowStage(layers=())
    size, uniformity, angle, speed, sigma_fraction, density, evenness = _draw_layers(
        rng, params, ("size", "size_uniformity", "angle", "speed", "blur_sigma_fraction",
                      "density", "density_uniformity")
    )
    scale = scale_factor(height, width)
    pitch = [scale / min(max(1.0 - s, 0.001), 1.0) for s in size]
    shapes = [snow_grid_shape(height, width, s) for s in size]
    # The recipe salts each cell with probability d; flakes drawn at random cells land
    # twice in a cell now and then and count once, so draw -ln(1 - d) per cell.
    counts = rng.poisson([
        -math.log1p(-min(d, 0.999)) * (height / p) * (width / p)
        for d, p in zip(density, pitch, strict=True)
    ]).tolist()
    u = rng.random(sum(counts))
    gates = beta_gate(rng, (len(params), GATE_CELLS, GATE_CELLS), np.array(evenness))
    ch, cw = _canvas_of(shapes, height, width)
    unit = max(ch, cw) / REFERENCE_SIZE  # canvas px per px at 512 px
    # The recipe's pre-blur: sigma = clip(512·fraction, 0.5, 3.75) px at 512 px.
    sigma = [min(max(REFERENCE_SIZE * f, 0.5), 3.75) for f in sigma_fraction]
    columns = [min(cw, COLUMNS_PER_CELL * gw) for _, gw in shapes]
    kernels = streak_kernels(
        [recipe_streak_taps(s) for s in speed], angle, [ch / gh for gh, _ in shapes],
        [cw / c for c in columns], unit, sigma,
    )
    flake_lut, glow_scale, glow_offset = snow_tables(np.array(uniformity), np.array(speed))
    # Every flake of the stage at once: its cell, brightness and gate (np.take: NumPy's
    # fancy indexing is several times slower on these sizes).
    layer = np.repeat(np.arange(len(shapes)), counts)
    gh, gw = (np.take(np.array(side, np.int64), layer) for side in zip(*shapes, strict=True))
    v = u * (gh * gw)
    cells = v.astype(np.int64)
    salt = salt_values(v - cells)
    rows, col = np.divmod(cells, gw)
    # The gate: each layer's 8x8 grid upsampled bicubically over its flake grid (as
    # cv2.resize), i.e. Wy·G·Wxᵀ, evaluated at the flakes only.
    down = np.concatenate([cubic_weights(h, GATE_CELLS) @ g for (h, _), g in zip(shapes, gates, strict=True)])
    across = np.concatenate([cubic_weights(w, GATE_CELLS) for _, w in shapes])
    row_at = np.take(np.cumsum([0] + [h for h, _ in shapes]), layer) + rows
    col_at = np.take(np.cumsum([0] + [w for _, w in shapes]), layer) + col
    gate = np.einsum("ij,ij->i", np.take(down, row_at, axis=0), np.take(across, col_at, axis=0))
    value = np.floor(salt * np.clip(gate, 0.0, 1.0)).astype(np.uint8)
    # Cell centre (c + 0.5) cells -> nearest streak-canvas column.
    x = np.rint((col + 0.5) * (np.take(np.array(columns), layer) / gw) - 0.5).astype(np.int32)
    rows = rows.astype(np.int32)
    layers = []
    for i, part in enumerate(_slices(counts)):
        layers.append(SnowLayer(
            grid_shape=shapes[i], width=columns[i], rows=rows[part], cols=x[part], value=value[part],
            profile=flake_profile(cw / shapes[i][1], cw / columns[i], unit, sigma[i]), kernel=kernels[i],
            lut_flake=flake_lut[i], glow_scale=float(glow_scale[i]), glow_offset=float(glow_offset[i]),
        ))
    return SnowStage(layers=tuple(layers))


def snow_streak_map(layer: SnowLayer, height: int, width: int) -> np.ndarray:
    """uint8 streak map ``n`` of one snow layer on a snow canvas of ``height``×``width``.

    Returns a scratch buffer (valid until the next call in this thread).
    """
    gh = layer.grid_shape[0]
    canvas = scratch("snow.flakes", (gh, layer.width), np.uint8)
    canvas.fill(0)
    canvas[layer.rows, layer.cols] = layer.value  # one flake per cell, as the recipe's salt
    across = cv2.filter2D(canvas, -1, layer.profile[None, :],
                          dst=scratch("snow.across", (gh, layer.width), np.uint8),
                          borderType=cv2.BORDER_CONSTANT)
    streaks = cv2.filter2D(across, -1, layer.kernel, dst=canvas, borderType=cv2.BORDER_CONSTANT)
    if (gh, layer.width) == (height, width):
        return streaks
    out = scratch("snow.streaks", (height, width), np.uint8)
    return cv2.resize(streaks, (width, height), dst=out, interpolation=cv2.INTER_CUBIC)


def snow_maps(stage: SnowStage, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed form (A, B) of a snow stage: the image becomes ``max(min(x + A, 255), B)``.

    The layers are composed on the stage's canvas (:func:`snow_canvas_shape`); A and B
    are upsampled to the image once when the canvas is coarser, and returned at the
    canvas's size when it is finer (see :func:`render_snow`). Returns scratch buffers
    (valid until the next call in this thread).
    """
    ch, cw = snow_canvas_shape(stage, height, width)
    add = scratch("snow.add", (ch, cw), np.uint8)
    floor = scratch("snow.floor", (ch, cw), np.uint8)
    glow = scratch("snow.glow", (ch, cw), np.uint8)
    flake = scratch("snow.flake", (ch, cw), np.uint8)
    add.fill(0)
    floor.fill(0)
    for layer in stage.layers:
        streaks = snow_streak_map(layer, ch, cw)
        cv2.LUT(streaks, layer.lut_flake, dst=flake)
        cv2.convertScaleAbs(flake, dst=glow, alpha=layer.glow_scale, beta=layer.glow_offset)
        cv2.add(add, glow, dst=add)  # uint8 add saturates: A ≥ 255 acts like 255
        cv2.add(floor, glow, dst=floor)
        cv2.max(floor, flake, dst=floor)
    if ch >= height and cw >= width:
        return add, floor
    maps = []
    for name, small in (("add", add), ("floor", floor)):
        out = scratch(f"snow.{name}_full", (height, width), np.uint8)
        maps.append(cv2.resize(small, (width, height), dst=out, interpolation=cv2.INTER_CUBIC))
    return maps[0], maps[1]


def render_snow(image: np.ndarray, stage: SnowStage) -> np.ndarray:
    """Apply a snow stage to an (H, W, C) image of grey levels (see :func:`owned_float`).

    uint8 input gives a new uint8 image (saturating arithmetic is exact there). On a
    supersampled canvas every pixel is the mean of its sub-pixels, each blended with the
    pixel's own value.
    """
    height, width, channels = image.shape
    add, floor = snow_maps(stage, height, width)
    factor = add.shape[0] // height
    if factor > 1:
        image = cv2.resize(image, (add.shape[1], add.shape[0]), interpolation=cv2.INTER_NEAREST)
        image = image.reshape(add.shape[0], add.shape[1], channels)
    if image.dtype == np.uint8:
        out = cv2.add(image, expand(add, channels))
        out = cv2.max(out, expand(floor, channels), dst=out)
    else:
        x = owned_float(image)
        # OpenCV adds uint8 to float32 directly; no clip at 0 is needed since B ≥ 0.
        cv2.add(x, expand(add, channels), dst=x, dtype=cv2.CV_32F)
        with_scalar("min", x, 255.0, dst=x)
        level = scratch("snow.level", add.shape)
        np.copyto(level, floor, casting="unsafe")
        out = cv2.max(x, expand(level, channels), dst=x)
    if factor > 1:
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
        out = out.reshape(height, width, channels)
    return out

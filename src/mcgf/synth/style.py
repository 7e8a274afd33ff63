"""Benchmark styles: the look of the synthetic world, so that transfer can be tested.

A :class:`SynthStyle` gathers the knobs that change how locations look without changing
what the benchmark is (ids, splits, orbit length, file layout): the palette, how dense,
large, tall and of what shapes the buildings are, how much vegetation there is, the sun,
and the drone camera. A model trained on one style and tested on another has to match
layouts, not one renderer's colours and proportions.

Built-in styles (:data:`STYLES`):

* ``default``: the original benchmark, reproduced exactly (same seed, same files).
* ``town``: a denser small town of low pitched-roof houses in a warm palette, with more
  and larger trees, a lower sun and a wider-angle drone camera flying lower.

A YAML file overrides any subset of the ``default`` style's fields (see
:func:`load_style`); pairs such as ``sun_elevation_deg: [20, 40]`` are ``[low, high]``
ranges drawn uniformly, orbit pairs are ``[first view, last view]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mcgf.errors import UserError
from mcgf.synth.camera import OrbitSpec
from mcgf.synth.palette import PALETTE_SLOTS, PALETTES, Palette

#: Order of the weights in :attr:`SynthStyle.building_kinds`.
BUILDING_KINDS = ("rect", "L", "T", "U", "courtyard", "round")
#: Order of the weights in :attr:`SynthStyle.roofs_small` and ``roofs_large``.
ROOF_KINDS = ("flat", "gabled", "hipped")


@dataclass(frozen=True)
class SynthStyle:
    """How synthetic locations look. Every field has a unit and an allowed range;
    ``(lo, hi)`` pairs are ranges drawn uniformly per item unless said otherwise.

    The target building (the landmark at the centre of each location) keeps its own
    shapes and heights in every style; the knobs act on the other buildings.
    """

    #: Name recorded in the metadata (a built-in name or the YAML file's stem).
    name: str = "default"

    # ---- palette
    #: Named palette the colours start from: ``default`` or ``town``.
    palette: str = "default"
    #: Per-material colour overrides, ``((material, RGB triples), ...)``; materials and
    #: the number of triples each takes are those of
    #: :data:`mcgf.synth.palette.PALETTE_SLOTS` (e.g. ``roofs`` 8, ``asphalt`` 1);
    #: components in [0, 1].
    colors: tuple[tuple[str, tuple[tuple[float, float, float], ...]], ...] = ()

    # ---- buildings
    #: Candidate building sites relative to the default style (×, 0–4); about 520
    #: candidates per 560 m location at 1, of which those on free land are built.
    building_density: float = 1.0
    #: Free gap kept around each ordinary building (m, 0.5–30).
    building_gap_m: tuple[float, float] = (2.5, 6.0)
    #: Scale of an ordinary building's footprint (×, 0.2–3; 1 ≈ 36 m × 17 m).
    building_scale: tuple[float, float] = (0.55, 1.25)
    #: Integer weights (0–100) of the footprints rect, L, T, U, courtyard, round.
    building_kinds: tuple[int, int, int, int, int, int] = (4, 2, 1, 1, 1, 1)
    #: Floors of an ordinary building, drawn uniformly from this list (repeat a value
    #: to make it likelier); 1–40 each, 1–64 entries.
    floors: tuple[int, ...] = (1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8)
    #: Storey height (m, 2.5–6).
    floor_height_m: tuple[float, float] = (3.2, 4.0)
    #: Weights (0–1) of flat, gabled, hipped roofs on small buildings (< 500 m²).
    roofs_small: tuple[float, float, float] = (0.35, 0.35, 0.30)
    #: Weights (0–1) of flat, gabled, hipped roofs on larger buildings.
    roofs_large: tuple[float, float, float] = (0.7, 0.12, 0.18)

    # ---- vegetation
    #: Candidate trees in groves relative to the default style (×, 0–5).
    tree_density: float = 1.0
    #: Crown radius (m, 1–12).
    tree_radius_m: tuple[float, float] = (2.2, 5.0)
    #: Probability that a street is lined with trees (0–1).
    street_trees: float = 0.6
    #: How far the driest grass patches turn to the dry tone (0 = all lawn green, 1 =
    #: fully dry; 0–1).
    dry_grass: float = 0.7

    # ---- sun and sky light
    #: Sun elevation above the horizon (degrees, 10–90).
    sun_elevation_deg: tuple[float, float] = (35.0, 65.0)
    #: Sun azimuth, clockwise from north (degrees, 0–360).
    sun_azimuth_deg: tuple[float, float] = (0.0, 360.0)
    #: Share of direct sunlight a cast shadow removes (0–1; 0 = no shadows).
    shadow_strength: float = 1.0
    #: Sky (ambient) light relative to the default style (×, 0.2–3).
    ambient: float = 1.0

    # ---- drone camera
    #: Horizontal (= vertical) field of view of the drone camera (degrees, 20–120).
    fov_deg: float = 50.0
    #: Orbit altitude above the ground of the first and the last view (m, 20–500).
    altitude_m: tuple[float, float] = (150.0, 85.0)
    #: Orbit pitch below the horizon of the first and the last view (degrees, 10–90).
    pitch_deg: tuple[float, float] = (52.0, 40.0)

    def validate(self, where: str = "style") -> None:
        """Raise a one-line :class:`UserError` naming the first bad field."""
        for f in fields(self):
            value = getattr(self, f.name)
            check = _CHECKS.get(f.name)
            if check is not None:
                check(f"{where}: {f.name}", value)

    def orbit(self) -> OrbitSpec:
        """The drone orbit of this style."""
        return replace(OrbitSpec(), altitude_first_m=float(self.altitude_m[0]),
                       altitude_last_m=float(self.altitude_m[1]), pitch_first_deg=float(self.pitch_deg[0]),
                       pitch_last_deg=float(self.pitch_deg[1]), fov_deg=float(self.fov_deg))

    def colours(self) -> Palette:
        """The resolved palette: the named one with the overrides applied."""
        base = PALETTES[self.palette]
        if not self.colors:
            return base
        return base.with_colors(dict(self.colors))

    def kinds_bag(self) -> list[str]:
        """Footprint kinds repeated by weight (drawn uniformly, like the original list)."""
        return [k for k, w in zip(BUILDING_KINDS, self.building_kinds, strict=True) for _ in range(int(w))]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (lists for tuples), for metadata."""
        d = asdict(self)
        d["colors"] = {k: [list(c) for c in v] for k, v in self.colors}
        return _lists(d)


def _lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- checks


def _number(name: str, value: Any, lo: float, hi: float, unit: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise UserError(f"{name} must be a number (got {value!r})")
    if not (math.isfinite(float(value)) and lo <= value <= hi):
        raise UserError(f"{name} must be between {lo:g} and {hi:g}{unit} (got {value!r})")
    return float(value)


def _scalar(lo: float, hi: float, unit: str = ""):  # -> checker
    def check(name: str, value: Any) -> None:
        _number(name, value, lo, hi, unit)
    return check


def _pair(lo: float, hi: float, unit: str = "", ordered: bool = True):  # -> checker
    def check(name: str, value: Any) -> None:
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise UserError(f"{name} must be a pair [low, high] (got {value!r})")
        a, b = (_number(name, v, lo, hi, unit) for v in value)
        if ordered and a > b:
            raise UserError(f"{name} must be [low, high] with low <= high (got {list(value)!r})")
    return check


def _weights(count: int, lo: float, hi: float, integer: bool, labels: tuple[str, ...]):  # -> checker
    def check(name: str, value: Any) -> None:
        what = f"{count} {'integer ' if integer else ''}weights for {', '.join(labels)}"
        if not isinstance(value, tuple | list) or len(value) != count:
            raise UserError(f"{name} must be {what} (got {value!r})")
        for v in value:
            if integer and (isinstance(v, bool) or not isinstance(v, int | np.integer)):
                raise UserError(f"{name} must be {what} (got {value!r})")
            _number(name, v, lo, hi)
        if sum(value) <= 0:
            raise UserError(f"{name} needs at least one positive weight (got {list(value)!r})")
    return check


def _check_floors(name: str, value: Any) -> None:
    if not isinstance(value, tuple | list) or not 1 <= len(value) <= 64:
        raise UserError(f"{name} must be a list of 1 to 64 floor counts (got {value!r})")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 1 <= v <= 40:
            raise UserError(f"{name} must hold whole floor counts between 1 and 40 (got {v!r})")


def _check_name(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise UserError(f"{name} must be a short non-empty text (got {value!r})")


def _check_palette(name: str, value: Any) -> None:
    if value not in PALETTES:
        raise UserError(f"{name} must be one of {', '.join(PALETTES)} (got {value!r})")


def _check_colors(name: str, value: Any) -> None:
    if not isinstance(value, tuple):
        raise UserError(f"{name} must map materials to colours (got {value!r})")
    for material, triples in value:
        if material not in PALETTE_SLOTS:
            raise UserError(f"{name}.{material} is not a material (known: {', '.join(PALETTE_SLOTS)})")
        count = PALETTE_SLOTS[material]
        try:
            arr = np.asarray(triples, dtype=object)
        except ValueError:  # ragged nesting
            arr = np.zeros(0, object)
        ok = arr.shape == (count, 3) and all(
            not isinstance(c, bool) and isinstance(c, int | float) and 0 <= c <= 1 for c in arr.reshape(-1))
        if not ok:
            want = "one RGB triple" if count == 1 else f"a list of {count} RGB triples"
            raise UserError(f"{name}.{material} must be {want} with components in [0, 1]")


_CHECKS = {
    "name": _check_name,
    "palette": _check_palette,
    "colors": _check_colors,
    "building_density": _scalar(0, 4),
    "building_gap_m": _pair(0.5, 30, " m"),
    "building_scale": _pair(0.2, 3),
    "building_kinds": _weights(6, 0, 100, True, BUILDING_KINDS),
    "floors": _check_floors,
    "floor_height_m": _pair(2.5, 6, " m"),
    "roofs_small": _weights(3, 0, 1, False, ROOF_KINDS),
    "roofs_large": _weights(3, 0, 1, False, ROOF_KINDS),
    "tree_density": _scalar(0, 5),
    "tree_radius_m": _pair(1, 12, " m"),
    "street_trees": _scalar(0, 1),
    "dry_grass": _scalar(0, 1),
    "sun_elevation_deg": _pair(10, 90, " degrees"),
    "sun_azimuth_deg": _pair(0, 360, " degrees"),
    "shadow_strength": _scalar(0, 1),
    "ambient": _scalar(0.2, 3),
    "fov_deg": _scalar(20, 120, " degrees"),
    "altitude_m": _pair(20, 500, " m", ordered=False),
    "pitch_deg": _pair(10, 90, " degrees", ordered=False),
}


# --------------------------------------------------------------------------- built-ins

DEFAULT_STYLE = SynthStyle()

#: Denser, lower, pitched-roof housing in a warm palette, more greenery, a low sun and a
#: wide-angle drone flying lower.
TOWN_STYLE = SynthStyle(
    name="town",
    palette="town",
    building_density=3.0,
    building_gap_m=(1.5, 3.5),
    building_scale=(0.45, 0.85),
    building_kinds=(6, 3, 1, 1, 0, 0),
    floors=(1, 1, 2, 2, 2, 2, 3, 3),
    floor_height_m=(2.9, 3.3),
    roofs_small=(0.08, 0.52, 0.40),
    roofs_large=(0.45, 0.30, 0.25),
    tree_density=1.5,
    tree_radius_m=(2.8, 6.0),
    street_trees=0.9,
    dry_grass=0.25,
    sun_elevation_deg=(22.0, 38.0),
    shadow_strength=0.85,
    ambient=1.15,
    fov_deg=70.0,
    altitude_m=(120.0, 65.0),
    pitch_deg=(50.0, 38.0),
)

STYLES: dict[str, SynthStyle] = {"default": DEFAULT_STYLE, "town": TOWN_STYLE}


def style_from_mapping(data: dict[str, Any], where: str, base: SynthStyle = DEFAULT_STYLE) -> SynthStyle:
    """``base`` with the fields in ``data`` replaced, validated.

    Lists become tuples; ``colors`` is a mapping ``material: triple`` (or a list of
    triples for ``grass``, ``trees``, ``roofs``, ``walls``).

    Raises:
        UserError: for an unknown field or a bad value, naming ``where`` and the field.
    """
    known = [f.name for f in fields(SynthStyle)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown option {unknown[0]} (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "colors":
            if not isinstance(value, dict):
                raise UserError(f"{where}: colors must map materials to RGB colours (got {value!r})")
            items = []
            for material, colour in sorted(value.items()):
                count = PALETTE_SLOTS.get(str(material), 1)
                triples = [colour] if count == 1 and _is_triple(colour) else colour
                if not isinstance(triples, list | tuple) or not all(isinstance(t, list | tuple) for t in triples):
                    raise UserError(f"{where}: colors.{material} must be RGB triples in [0, 1] (got {colour!r})")
                items.append((str(material), tuple(tuple(t) for t in triples)))
            values[key] = tuple(items)
        else:
            values[key] = tuple(value) if isinstance(value, list) else value
    style = replace(base, **values)
    style.validate(where)
    return style


def _is_triple(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 3 and not any(isinstance(v, list | tuple) for v in value)


def load_style(spec: str | SynthStyle | None, where: str = "--style") -> SynthStyle:
    """A built-in style by name, or a YAML file overriding fields of ``default``.

    A file without a ``name`` is named after its stem.

    Raises:
        UserError: unknown name, unreadable file or bad field (one line naming it).
    """
    if spec is None:
        return DEFAULT_STYLE
    if isinstance(spec, SynthStyle):
        spec.validate(where)
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{where} must be a style name ({', '.join(STYLES)}) or a .yaml file (got {spec!r})")
    if spec in STYLES:
        return STYLES[spec]
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"{where} {spec}: not a built-in style ({', '.join(STYLES)}) nor a .yaml file")
    if not path.is_file():
        raise UserError(f"{where} {spec}: no such file (built-in styles: {', '.join(STYLES)})")
    from mcgf.config import load_config

    data = load_config(path)
    data.setdefault("name", path.stem)
    return style_from_mapping(data, f"{where} {spec}")

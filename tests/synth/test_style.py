"""Benchmark styles and per-split image sizes: values, not just "it ran"."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mcgf.cli.demo import synth_config
from mcgf.cli.main import main
from mcgf.errors import UserError
from mcgf.synth import SynthConfig, generate_benchmark
from mcgf.synth.camera import pose_looking_at
from mcgf.synth.lighting import Sun
from mcgf.synth.location import build_location, render_drone_views, render_satellite_tile
from mcgf.synth.palette import DEFAULT_PALETTE, PALETTE_SLOTS, TOWN_PALETTE, Material
from mcgf.synth.render import TopPyramid, render_drone
from mcgf.synth.style import DEFAULT_STYLE, STYLES, TOWN_STYLE, SynthStyle, load_style
from tests.synth.conftest import TINY, box, box_scene, shaded

ONE = SynthConfig(train=1, test=1, distractors=0, extra_distractors=0, views=2, size=64, seed=3)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _style_file(tmp_path: Path, data: dict, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- default


def test_default_style_reproduces_the_original_locations() -> None:
    # Recorded from the renderer before styles existed (seed 0, 64 px): layouts exactly,
    # image means to a hundredth of a level.
    golden = {
        1: (63, 1429, "587b051e096d673c", 43.6753, [95.62, 103.35, 78.46], [81.81, 94.34, 78.22]),
        2: (48, 2121, "ce14f859fb209863", 37.2463, [76.7, 85.33, 65.08], [71.42, 83.86, 69.76]),
    }
    for number, (buildings, trees, parts_hash, elevation, sat_mean, view_mean) in golden.items():
        loc = build_location(0, number, 64, style=DEFAULT_STYLE)
        parts = [(round(p.cx, 3), round(p.cy, 3), round(p.top, 3)) for b in loc.layout.buildings for p in b.parts]
        assert len(loc.layout.buildings) == buildings and len(loc.layout.trees) == trees
        assert hashlib.sha256(repr(parts).encode()).hexdigest()[:16] == parts_hash
        assert round(loc.sun.elevation_deg, 4) == elevation
        sat, _ = render_satellite_tile(loc, 0, 64)
        view = render_drone_views(loc, 0, 1, 64)[0].view.image
        assert np.allclose(sat.reshape(-1, 3).mean(0), sat_mean, atol=0.02)
        assert np.allclose(view.reshape(-1, 3).mean(0), view_mean, atol=0.02)


def test_default_style_object_and_name_give_the_same_files(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "named"
    generate_benchmark(out, replace(TINY, style=load_style("default")), workers=1, progress=False)
    a, b = _tree(tiny), _tree(out)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["config"]["style"]["name"] == "default" and meta["config"]["train_size"] is None
    assert meta["style"]["palette"]["asphalt"] == [0.29, 0.29, 0.3]


# --------------------------------------------------------------------------- town


def _stats(style: SynthStyle, numbers: range) -> dict[str, float]:
    heights, trees, roofs, pitched, counts, means = [], [], [], [], [], []
    for number in numbers:
        loc = build_location(1, number, 64, style=style)
        others = [b for b in loc.layout.buildings if not b.target]
        counts.append(len(others))
        heights += [max(p.top for p in b.parts) for b in others]
        pitched += [b.parts[0].roof in ("gabled", "hipped") for b in others]
        s = loc.scene
        c, r = s.n // 2, round(90 / s.cell)
        m = s.material[c - r:c + r, c - r:c + r]
        trees.append((m == Material.TREE).mean())
        roofs.append((m == Material.ROOF).mean())
        sat, _ = render_satellite_tile(loc, 1, 64)
        means.append(sat.reshape(-1, 3).mean(0))
    return {"height": float(np.mean(heights)), "trees": float(np.mean(trees)), "roofs": float(np.mean(roofs)),
            "pitched": float(np.mean(pitched)), "count": float(np.mean(counts)),
            "mean_rgb": np.mean(means, 0)}


def test_town_differs_in_the_direction_of_its_knobs() -> None:
    d, t = _stats(DEFAULT_STYLE, range(1, 5)), _stats(TOWN_STYLE, range(1, 5))
    # Denser, lower buildings, mostly pitched roofs, more built ground.
    assert t["count"] > 2 * d["count"]
    assert t["height"] < 0.75 * d["height"]
    assert t["pitched"] > d["pitched"] + 0.2
    assert t["roofs"] > d["roofs"]
    # More vegetation: tree crowns cover a larger share of the satellite area.
    assert t["trees"] > 1.3 * d["trees"]
    # Another palette: the satellite tiles' mean colour moves (greener lawns, red roofs).
    assert np.abs(t["mean_rgb"] - d["mean_rgb"]).max() > 8


def test_town_sun_is_lower_and_shadows_longer() -> None:
    from mcgf.synth.lighting import random_sun
    from mcgf.synth.location import location_rng

    def elevations(style: SynthStyle) -> list[float]:
        return [random_sun(location_rng(2, n, "sun"), style.sun_azimuth_deg, style.sun_elevation_deg).elevation_deg
                for n in range(1, 41)]

    town, default = elevations(TOWN_STYLE), elevations(DEFAULT_STYLE)
    assert min(town) >= 22 and max(town) <= 38 and min(default) >= 35 and max(default) <= 65
    assert np.mean(default) - np.mean(town) > 15
    assert build_location(2, 1, 64, style=TOWN_STYLE).sun.elevation_deg == town[0]
    # Same scene: a lower sun darkens more ground (longer cast shadows).
    scene = box_scene([box(0, 0, 8, 20)])
    low = shaded(scene, Sun(135, 25)).mean()
    high = shaded(scene, Sun(135, 60)).mean()
    assert low < high
    # Weaker shadows lighten the shadowed ground by the removed share of sunlight.
    soft = shaded(scene, Sun(135, 25, shadow=0.5))
    hard = shaded(scene, Sun(135, 25))
    assert soft.mean() > hard.mean()


def test_fov_changes_apparent_size_by_the_expected_ratio() -> None:
    scene = box_scene([box(0, 0, 10, 8)])
    pyramid = TopPyramid(shaded(scene))

    def covered(fov: float) -> int:
        pose = pose_looking_at((0.0, 0.0, 0.0), heading_deg=20, pitch_deg=60, altitude_m=120, fov_deg=fov)
        view = render_drone(scene, pyramid, Sun(135, 45), pose, 160)
        return int(np.isin(view.material, (Material.ROOF, Material.WALL)).sum())

    wide, narrow = covered(TOWN_STYLE.fov_deg), covered(DEFAULT_STYLE.fov_deg)
    # Image-plane size scales with 1 / tan(fov / 2); area with its square.
    expected = (np.tan(np.radians(DEFAULT_STYLE.fov_deg / 2)) / np.tan(np.radians(TOWN_STYLE.fov_deg / 2))) ** 2
    assert narrow > 300
    assert abs(wide / narrow - expected) < 0.06 * expected
    # The style's orbit carries its field of view into every pose.
    loc = build_location(0, 1, 64, style=TOWN_STYLE)
    poses = [s.pose for s in render_drone_views(loc, 0, 3, 64)]
    assert [p.fov_deg for p in poses] == [70.0] * 3
    assert poses[0].altitude_m < 130 and poses[-1].altitude_m < 70


# --------------------------------------------------------------------------- YAML files


def test_yaml_override_of_one_field_changes_only_that(tmp_path: Path) -> None:
    style = load_style(str(_style_file(tmp_path, {"fov_deg": 65})))
    assert style == replace(DEFAULT_STYLE, fov_deg=65.0, name="mine")
    # Only the drone views change: layouts, satellites and names stay byte-identical.
    a, b = tmp_path / "a", tmp_path / "b"
    generate_benchmark(a, ONE, workers=1, progress=False)
    generate_benchmark(b, replace(ONE, style=style), workers=1, progress=False)
    ta, tb = _tree(a), _tree(b)
    assert ta.keys() == tb.keys()
    changed = sorted(k for k in ta if ta[k] != tb[k])
    assert changed and all("drone" in k or k == "metadata.json" for k in changed)
    assert any("satellite" in k for k in ta) and not any("satellite" in k for k in changed)
    meta = json.loads((b / "metadata.json").read_text())
    assert meta["config"]["style"]["fov_deg"] == 65 and meta["geometry"]["orbit"]["fov_deg"] == 65
    assert meta["locations"]["0001"]["drone"][0]["pose"]["fov_deg"] == 65


def test_yaml_colour_override_and_palette(tmp_path: Path) -> None:
    style = load_style(str(_style_file(tmp_path, {"palette": "town", "colors": {"asphalt": [0.5, 0.1, 0.1]}})))
    pal = style.colours()
    assert np.allclose(pal.asphalt, [0.5, 0.1, 0.1])
    for name in PALETTE_SLOTS:
        if name != "asphalt":
            assert np.array_equal(getattr(pal, name), getattr(TOWN_PALETTE, name)), name
    assert style.to_dict()["colors"] == {"asphalt": [[0.5, 0.1, 0.1]]}
    # Roads take the colour: asphalt cells of the scene hold it.
    loc = build_location(0, 1, 64, style=style)
    road = loc.scene.material == Material.ROAD
    assert np.abs(np.median(loc.scene.albedo[road], 0) - [0.5, 0.1, 0.1]).max() < 0.06
    assert not np.array_equal(DEFAULT_PALETTE.asphalt, pal.asphalt)


@pytest.mark.parametrize(
    ("data", "needle"),
    [({"fov_deg": 500}, "fov_deg must be between 20 and 120"),
     ({"bogus": 1}, "unknown option bogus"),
     ({"sun_elevation_deg": [60, 30]}, "sun_elevation_deg must be [low, high]"),
     ({"building_kinds": [1, 2]}, "building_kinds must be 6 integer weights"),
     ({"floors": [0, 2]}, "floors must hold whole floor counts"),
     ({"colors": {"roofs": [[0.1, 0.2, 0.3]]}}, "colors.roofs must be a list of 8 RGB triples"),
     ({"colors": {"lava": [1, 0, 0]}}, "colors.lava is not a material"),
     ({"palette": "mars"}, "palette must be one of default, town"),
     ({"tree_density": "lots"}, "tree_density must be a number")],
)
def test_bad_style_values_are_one_line_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  data: dict, needle: str) -> None:
    path = _style_file(tmp_path, data)
    assert main(["synth", str(tmp_path / "o"), "--style", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err and "mine.yaml" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--style", "nosuch"], "--style nosuch"), (["--style", "missing.yaml"], "missing.yaml"),
     (["--train-size", "20"], "--train-size"), (["--train-size", "abc"], "--train-size"),
     (["--train-size", "600"], "--train-size")],
)
def test_bad_style_and_train_size_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], needle: str) -> None:
    assert main(["synth", str(tmp_path / "o"), *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_every_builtin_style_is_valid_and_json_round_trips() -> None:
    for name, style in STYLES.items():
        style.validate()
        assert style.name == name and load_style(name) is style
        d = SynthConfig(style=style).to_dict()
        assert json.loads(json.dumps(d)) == d


# --------------------------------------------------------------------------- determinism, reuse


def test_town_is_deterministic_and_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    cfg = replace(TINY, style=TOWN_STYLE, extra_distractors=1)
    generate_benchmark(tmp_path / "a", cfg, workers=1, progress=False)
    generate_benchmark(tmp_path / "b", cfg, workers=2, progress=False)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["config"]["style"] == TOWN_STYLE.to_dict() and meta["style"]["name"] == "town"
    assert meta["style"]["palette"]["roofs"][3] == [0.7, 0.3, 0.18]
    # Another style into an existing output is refused unless forced.
    with pytest.raises(UserError, match="--force"):
        generate_benchmark(tmp_path / "a", replace(cfg, style=DEFAULT_STYLE), workers=1, progress=False)
    assert _tree(tmp_path / "a") == a


def test_config_style_key_and_reuse_check(tmp_path: Path) -> None:
    path = _style_file(tmp_path, {"fov_deg": 60})
    cfg, weather = synth_config({"synth": {"style": str(path), "train_size": 64, "size": 96}}, "demo.yaml")
    assert cfg.style.fov_deg == 60 and cfg.train_size == 64 and weather == "random"
    default, _ = synth_config({"synth": {"style": "default", "train_size": None}}, "demo.yaml")
    assert default == SynthConfig()
    town, _ = synth_config({"synth": {"style": "town"}}, "demo.yaml")
    # The demo reuses a benchmark only when the recorded config matches, style included.
    assert town.to_dict() != default.to_dict()
    with pytest.raises(UserError, match=r"demo.yaml: synth.style nosuch"):
        synth_config({"synth": {"style": "nosuch"}}, "demo.yaml")
    with pytest.raises(UserError, match=r"demo.yaml: synth.train_size must be between 64 and 512"):
        synth_config({"synth": {"train_size": 8}}, "demo.yaml")
    shipped = yaml.safe_load(Path("configs/demo.yaml").read_text())
    assert shipped["synth"]["style"] == "default" and shipped["synth"]["train_size"] == 64
    # configs/demo.yaml is what `mcgf demo` does without --config.
    from dataclasses import asdict

    from mcgf.cli.demo import DEMO_SYNTH_DEFAULTS

    builtin, _ = synth_config({"synth": dict(DEMO_SYNTH_DEFAULTS)}, "built-in")
    from_file, _ = synth_config(shipped, "configs/demo.yaml")
    assert asdict(builtin) == asdict(from_file)


# --------------------------------------------------------------------------- train size


def test_train_size_renders_the_train_split_at_its_own_size(tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["--train", "2", "--test", "1", "--distractors", "1", "--extra-distractors", "1", "--views", "2",
            "--size", "96", "--train-size", "64", "--workers", "1", "--quiet", "--query-weather", "none"]
    assert main(["synth", str(out), *args]) == 0
    sizes: dict[str, set[tuple[int, int]]] = {}
    for path in out.rglob("*"):
        if path.suffix in (".jpg", ".jpeg", ".webp"):
            with Image.open(path) as im:
                split = "train" if "/train/" in str(path) else "test"
                sizes.setdefault(split, set()).add(im.size)
    assert sizes == {"train": {(64, 64)}, "test": {(96, 96)}}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["config"]["train_size"] == 64 and meta["config"]["size"] == 96
    assert meta["geometry"]["train_raster_cell_m"] == pytest.approx(180 / 64)
    # A train location is the same place at either size (layouts do not depend on it).
    small = build_location(ONE.seed, 1, 64)
    large = build_location(ONE.seed, 1, 96)
    assert small.layout.summary() == large.layout.summary()

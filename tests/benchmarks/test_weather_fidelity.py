"""The pure parts of benchmarks/weather_fidelity.py: statistics, Fréchet distance, errors.

None of these needs imgaug or its legacy environment.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.benchmarks.conftest import BENCHMARKS, load_script

fid = load_script("weather_fidelity")


def grey(value: int, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_luma_and_saturation_of_known_colours():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [0, 0, 0]]], np.uint8)
    np.testing.assert_allclose(fid.luma(rgb)[0], [76.245, 149.685, 29.07, 128.0, 0.0], rtol=1e-5)
    np.testing.assert_allclose(fid.saturation(rgb)[0], [1, 1, 1, 0, 0])


def test_stats_of_flat_image():
    s = fid.image_stats(grey(100))
    assert s["luma_mean"] == pytest.approx(100.0, abs=1e-3)
    assert s["luma_std"] == pytest.approx(0.0, abs=1e-3)
    assert s["rms_contrast"] == pytest.approx(0.0, abs=1e-6)
    assert s["saturation"] == 0.0
    assert s["hf_energy"] == 0.0
    assert s["clipped"] == 0.0


def test_stats_of_checkerboard():
    # 0/255 checkerboard: mean 127.5, std 127.5, every pixel clipped, each interior
    # Laplacian response ±4·255.
    board = ((np.indices((32, 32)).sum(axis=0) % 2) * 255).astype(np.uint8)
    s = fid.image_stats(np.repeat(board[:, :, None], 3, axis=2))
    assert s["luma_mean"] == pytest.approx(127.5, abs=0.01)
    assert s["luma_std"] == pytest.approx(127.5, abs=0.01)
    assert s["rms_contrast"] == pytest.approx(127.5, abs=0.01)
    assert s["clipped"] == pytest.approx(100.0)
    assert s["hf_energy"] == pytest.approx((4 * 255.0) ** 2, rel=1e-4)


def test_clipped_share_thresholds():
    y = np.array([0, 2, 3, 252, 253, 255], np.float32)
    assert fid.clipped_share(y) == pytest.approx(100 * 4 / 6)


def test_local_contrast_ignores_global_gradient_between_blocks():
    # Two flat halves: a large global spread, but no contrast inside any 16-px block.
    y = np.zeros((32, 32), np.float32)
    y[:, 16:] = 200
    assert y.std() == pytest.approx(100.0)
    assert fid.local_rms_contrast(y) == pytest.approx(0.0)


def test_feature_vector_shape_and_flat_values():
    v = fid.feature_vector(grey(50, 64))
    assert v.shape == (len(fid.FEATURE_NAMES),)
    named = dict(zip(fid.FEATURE_NAMES, v, strict=True))
    assert named["mean_g"] == pytest.approx(50.0)
    assert named["grad_1"] == 0.0 and named["log_lap_8"] == 0.0
    assert named["clip_low"] == 0.0 and named["y_p50"] == pytest.approx(50.0, abs=1e-3)


def test_frechet_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_known_values():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 3))
    # A pure shift of the mean adds |shift|².
    shift = np.array([3.0, 0.0, 4.0])
    assert fid.frechet_distance(a, a + shift) == pytest.approx(25.0, rel=1e-9)
    # Scaling by k: tr(Σ + k²Σ − 2kΣ) = (1 − k)² tr Σ.
    cov = np.cov(a, rowvar=False)
    m = a.mean(axis=0)
    assert fid.frechet_distance(a, 2 * a) == pytest.approx(np.trace(cov) + m @ m, rel=1e-6)
    # Symmetric.
    b = rng.normal(size=(300, 3)) * [1, 2, 3]
    assert fid.frechet_distance(a, b) == pytest.approx(fid.frechet_distance(b, a), rel=1e-9)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError):
        fid.frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))


def test_feature_scale_is_pooled_std():
    a = np.array([[0.0, 5.0], [0.0, 5.0]])
    b = np.array([[2.0, 5.0], [2.0, 5.0]])
    np.testing.assert_allclose(fid.feature_scale(a, b), [1.0, 1e-6])


def test_missing_legacy_environment_is_one_line(tmp_path, capsys):
    code = fid.main(["--legacy-python", str(tmp_path / "nope" / "python"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: legacy imgaug environment not found")
    assert "python3.11 -m venv .venv-imgaug" in err and "imgaug==0.4.0" in err
    assert not (tmp_path / "o").exists()


def test_bad_options_are_one_line(tmp_path, capsys):
    exe = tmp_path / "python"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert fid.main(["--legacy-python", str(exe), "--count", "zero"]) == 2
    assert fid.main(["--legacy-python", str(exe), "--checkpoint", "ck"]) == 2
    assert fid.main(["--legacy-python", str(exe), "--images", str(tmp_path / "missing")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(ln.startswith("error: ") for ln in lines)


def test_markdown_tables():
    row = {"recipe": dict.fromkeys(fid.STATS, 1.0), "mcgf": dict.fromkeys(fid.STATS, 2.0),
           "recipe_other_seed": dict.fromkeys(fid.STATS, 1.5), "frechet": 3.0, "frechet_other_seed": 5.0,
           "frechet_floor": 1.0,
           "largest_feature_gaps": ["mean_r"]}
    row["floor_band"] = dict.fromkeys(fid.STATS, 0.8)
    text = fid.statistics_markdown({"clean": dict.fromkeys(fid.STATS, 0.0), "conditions": {"fog": row}})
    assert "| fog |" in text and "| 3.00 | 5.00 | 1.00 | 4.0 | mean_r |" in text
    # mcgf 2.0 vs recipe 1.0: a difference of 1, above |A − B| = 0.5 and the band 0.8.
    assert "1.0 / 2.0 (+1; 0.5, 0.8) ✗" in text
    row["floor_band"] = dict.fromkeys(fid.STATS, 1.2)
    text = fid.statistics_markdown({"clean": dict.fromkeys(fid.STATS, 0.0), "conditions": {"fog": row}})
    assert "1.0 / 2.0 (+1; 0.5, 1.2) |" in text


def test_stat_band_is_two_standard_errors_of_the_paired_differences():
    a = [dict.fromkeys(fid.STATS, float(v)) for v in (1.0, 2.0, 3.0, 4.0)]
    b = [dict.fromkeys(fid.STATS, float(v)) for v in (1.0, 1.0, 4.0, 4.0)]
    # differences 0, 1, -1, 0: std (ddof 1) sqrt(2/3), over sqrt(4), times 2.
    band = fid.stat_band(a, b)
    assert band["luma_mean"] == pytest.approx(2 * np.sqrt(2 / 3) / 2)
    assert fid.stat_band(a, a)["hf_energy"] == 0.0
    retrieval = {"queries": 8, "clean_R@1": 50.0, "tolerance": 2.0, "passed": False,
                 "max_abs_difference": 3.0,
                 "conditions": {"fog": fid.retrieval_row(40.0, 42.5, 41.0, 39.0, floor_band=3.5),
                                "rain": fid.retrieval_row(40.0, 40.5, 43.0, 39.0, floor_band=3.5)}}
    text = fid.retrieval_markdown(retrieval)
    assert "FAILED on rain" in text
    assert "| fog | 40.00 | 42.50 | 2.50 (3.50) | 41.00 | 39.00 | +1.00 | -1.50 | -1.00 |" in text
    assert "| rain | 40.00 | 40.50 | 0.50 (3.50) | 43.00 | 39.00 | +3.00 ✗ | +2.50 | -1.00 |" in text


def test_paired_band_of_per_query_outcomes():
    # 100 queries; the two renderings disagree on 20 (10 each way): differences d_i in
    # {-1, 0, 1} with variance 0.2 * 100/99; two standard errors of the mean, in points.
    a = {i: i < 50 for i in range(100)}
    b = {i: (i < 40) or (50 <= i < 60) for i in range(100)}
    expected = 200.0 * np.sqrt(20 / 99) / 10
    assert fid.paired_band(a, b) == pytest.approx(expected)
    assert fid.paired_band(a, a) == 0.0
    # Only queries both renderings have count.
    assert fid.paired_band({0: True, 1: False, 2: True}, {0: True, 1: False}) == 0.0
    assert np.isnan(fid.paired_band({0: True}, {0: False}))


def test_retrieval_tolerance_is_the_larger_of_two_points_and_the_floor():
    # Recipe seeds 3 points apart: a 3-point gap to mcgf is noise; 3.25 is not.
    row = fid.retrieval_row(30.0, 33.0, 33.0, 31.0)
    assert (row["floor"], row["tolerance"], row["passed"]) == (3.0, 3.0, True)
    assert (row["mcgf512_minus_recipe"], row["mcgf512_minus_recipe_other_seed"]) == (3.0, 0.0)
    assert not fid.retrieval_row(30.0, 33.0, 33.25, 31.0)["passed"]
    # Seeds that agree: the 2-point tolerance.
    assert fid.retrieval_row(30.0, 30.5, 32.0, 31.0)["passed"]
    assert not fid.retrieval_row(30.0, 30.5, 27.75, 31.0)["passed"]


def test_recipe_script_is_standalone():
    # The legacy script must not import mcgf (it runs with imgaug's old NumPy).
    source = (BENCHMARKS / "imgaug_recipe.py").read_text()
    assert "import mcgf" not in source and "from mcgf" not in source
    json.dumps(fid.STAT_ROWS)  # the condition rows are plain data


def test_recipe_jobs_seed_per_image_and_fail_in_one_line(tmp_path, capsys):
    recipe = load_script("imgaug_recipe")
    a = recipe.job_entropy(0, "0001/image-01.jpeg", "fog", "train")
    assert a == recipe.job_entropy(0, "0001/image-01.jpeg", "fog", "train")
    assert a != recipe.job_entropy(1, "0001/image-01.jpeg", "fog", "train")
    assert a != recipe.job_entropy(0, "0001/image-02.jpeg", "fog", "train")
    assert 0 <= a < 2**63
    with pytest.raises(ValueError, match="unknown condition"):
        recipe._check({"image": "x", "condition": "hail", "output": "y"}, 0)
    if recipe.iaa is None:  # the project environment has no imgaug: one line, exit 2
        jobs = tmp_path / "jobs.json"
        jobs.write_text("[]")
        assert recipe.main(["--jobs", str(jobs)]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_hit_tap_scores_top_one_per_query(tmp_path):
    from types import SimpleNamespace as NS

    def feats(rows):
        x = np.asarray(rows, np.float32)
        return NS(features=x / np.linalg.norm(x, axis=1, keepdims=True), valid=np.ones(len(x), bool))

    tap = fid._HitTap()
    gallery = [NS(label=i, path=tmp_path / f"{i}/sat.jpg") for i in range(3)]
    tap("clean", "gallery_satellite", gallery, feats(np.eye(3)))
    tap("fog", "gallery_satellite", gallery, feats(np.ones((3, 3))))  # only the first counts
    queries = [NS(label=0, path=tmp_path / "0/image-01.jpeg"), NS(label=1, path=tmp_path / "1/image-01.jpeg"),
               NS(label=2, path=tmp_path / "2/image-02.jpeg")]
    # Query 1 looks like location 0: a miss; the others hit.
    tap("fog", "query_drone", queries, feats([[1, 0.1, 0], [1, 0.2, 0], [0, 0, 1]]))
    assert tap.hits("fog") == {(0, "image-01"): True, (1, "image-01"): False, (2, "image-02"): True}
    with pytest.raises(fid.FidelityError):
        tap.hits("rain")


def test_retrieval_seeds_pair_recipe_a_and_b_and_mcgf():
    one = fid.retrieval_seeds(0, 1)
    assert one == {"recipe": [("recipe-seed0", 0)], "recipe_other_seed": [("recipe-seed1", 1)],
                   "mcgf512": [("mcgf512-seed0", 0)]}
    three = fid.retrieval_seeds(5, 3)
    assert [s for _, s in three["recipe"]] == [5, 7, 9] == [s for _, s in three["mcgf512"]]
    assert [s for _, s in three["recipe_other_seed"]] == [6, 8, 10]


def test_mean_hits_average_renderings_per_query():
    a = {(0, "x"): True, (1, "y"): False, (2, "z"): True}
    b = {(0, "x"): False, (1, "y"): False}
    assert fid._mean_hits([a, b]) == {(0, "x"): 0.5, (1, "y"): 0.0}
    # Averaged renderings feed the band: a query hit by half of A's seeds and none of B's.
    assert fid.paired_band({0: 0.5, 1: 0.0}, {0: 0.0, 1: 0.0}) == pytest.approx(200 * np.std([0.5, 0], ddof=1) / np.sqrt(2))


def test_recipe_seeding_reaches_children_lists_that_are_augmenters():
    # imgaug's seed_ walks each children list's members but never seeds a list that is
    # itself an augmenter (a Sequential holding the multiply/add of a brightness change).
    recipe = load_script("imgaug_recipe")

    class Rng:
        def __init__(self, n: int = 0) -> None:
            self.n, self.k = n, 0

        def copy(self) -> Rng:
            return Rng(self.n)

        def derive_rng_(self) -> Rng:
            self.k += 1
            return Rng(self.n * 10 + self.k)

    class Aug(list):
        def __init__(self, name, children=(), nested=None):
            super().__init__(children)
            self.name, self.nested, self.random_state = name, nested, None

        def get_children_lists(self):
            return [self.nested] if self.nested is not None else [self]

    order = Aug("order", [Aug("mul"), Aug("add")])  # a Sequential: its own list
    brightness = Aug("brightness", nested=order)    # children held in that Sequential
    root = Aug("root", [brightness])
    recipe.seed_tree(root, Rng(1))
    states = {a.name: a.random_state.n for a in (root, brightness, order, order[0], order[1])}
    assert all(v is not None for v in states.values())
    assert states == {"root": 1, "brightness": 11, "order": 111, "mul": 1111, "add": 1112}

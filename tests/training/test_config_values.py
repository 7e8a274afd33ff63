"""Every option of every shipped config is checked before any work starts.

For each ``configs/*.yaml`` and each option of its sections (the keys it sets and every
option the section declares), bad values go through the command line's ``--set``: values
of the wrong type (derived from the shipped value) and the out-of-range examples of the
option's declared constraint. Each must stop ``mcgf train`` / ``mcgf demo`` with exit code 2
and one line naming the option, before data is read, a model built or a benchmark drawn.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcgf.cli.main import main
from mcgf.config import load_config
from mcgf.errors import UserError
from mcgf.models.mcgf_model import MCGFModel, MCGFOptions
from mcgf.models.model_registry import check_model_options, create_model, model_options_type
from mcgf.training.config import DataConfig, TrainConfig, WeatherConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SECTION_TYPES = {"data": DataConfig, "weather": WeatherConfig, "train": TrainConfig}


def _spec(cfg: dict[str, Any], section: str) -> type | None:
    if section == "model":
        return model_options_type(str((cfg.get("model") or {}).get("name", "mcgf")))
    return SECTION_TYPES.get(section)


def _wrong_types(value: Any) -> list[Any]:
    """Values of another type than the shipped ``value``."""
    if isinstance(value, bool):
        return ["bad"]
    if isinstance(value, (int, float)):
        return ["bad", True]
    if isinstance(value, dict):
        return ["bad"]
    return [{"x": 1}]  # strings and lists


def _out_of_range(cfg: dict[str, Any], section: str, key: str) -> list[Any]:
    """The declared constraint's rejected examples (synth: just outside its limits)."""
    if section == "synth":
        from mcgf.synth.benchmark import _LIMITS

        lo, hi = _LIMITS.get(key, _LIMITS["size"] if key == "train_size" else (None, None))
        return [] if lo is None else [lo - 1, hi + 1]
    if section == "model" and key == "name":
        return ["no_such_model"]
    spec = _spec(cfg, section)
    if spec is None:
        return []
    fields = {f.name: f for f in dataclasses.fields(spec)}
    check = fields[key].metadata.get("check")
    return list(check.bad) if check is not None else []


def _cases() -> list[tuple[Path, str, str]]:
    cases = []
    for path in CONFIGS:
        cfg = load_config(path)
        for section, values in cfg.items():
            keys = set(values or {})
            spec = _spec(cfg, section)
            if spec is not None:
                keys |= {f.name for f in dataclasses.fields(spec)}
            cases += [(path, section, key) for key in sorted(keys)]
    return cases


def _text(value: Any) -> str:
    """``value`` as a ``--set`` value (YAML flow style)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets past validation."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the config was validated")

    monkeypatch.setattr("mcgf.training.loop.train", refuse)
    monkeypatch.setattr("mcgf.training.loop.read_train_split", refuse)
    monkeypatch.setattr("mcgf.synth.generate_benchmark", refuse)


def test_every_shipped_config_and_section_is_covered() -> None:
    sections = {s for p in CONFIGS for s in load_config(p)}
    assert {"data", "weather", "model", "train", "synth"} <= sections
    assert len(_cases()) > 100


@pytest.mark.parametrize(("path", "section", "key"), _cases(),
                         ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_bad_value_stops_before_work_with_one_line_naming_the_option(
        path: Path, section: str, key: str, tmp_path: Path, no_work: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(path)
    shipped = (cfg.get(section) or {}).get(key)
    if shipped is None:  # not set: use the default, or for a null default a value of its type
        spec = _spec(cfg, section)
        field = next(f for f in dataclasses.fields(spec) if f.name == key)
        shipped = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if shipped is None:
            shipped = next(v for t, v in (("dict", {}), ("int", 1), ("float", 1.0), ("str", ""))
                           if t in str(field.type))
    bad = _wrong_types(shipped) + _out_of_range(cfg, section, key)
    assert bad
    for value in bad:
        setting = f"{section}.{key}={_text(value)}"
        if section == "synth":
            argv = ["demo", "--config", str(path), "--out", str(tmp_path / "demo"),
                    "--train-config", str(REPO / "configs" / "demo-cpu.yaml"), "--set", setting]
        else:
            argv = ["train", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet",
                    "--set", setting]
        assert main(argv) == 2, setting
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mcgf: error: "), (setting, err)
        assert f"{section}.{key}" in err, (setting, err)


@pytest.mark.parametrize(("setting", "message"), [
    ("model.restoration_width=4", "model.restoration_width must be a positive multiple of 8 (got 4)"),
    ("model.img_size=-5", "model.img_size must be >= 1 (got -5)"),
    ("model.restoration_mults=[2, 0]", "model.restoration_mults must be a non-empty list of integers"),
    ("model.satellite_rotations=3", "model.satellite_rotations must be 1, 2 or 4 (got 3)"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1) (got 1.5)"),
    ("model.backbone_name=resnet_nine", "model.backbone_name must be a timm model name"),
    ("model.weights=missing.safetensors", "model.weights must be an existing .safetensors"),
    ("model.wings=2", "unknown option model.wings"),
    ("train.lr=nan", "train.lr must be a finite number (got nan)"),
    ("train.seed=-1", "train.seed must be in [0, 2^63) (got -1)"),
    # torch.manual_seed takes at most 64 bits, and each rank adds its rank to the seed.
    ("train.seed=99999999999999999999", "train.seed must be in [0, 2^63) (got 99999999999999999999)"),
    ("weather.clean_fraction=2", "weather.clean_fraction must be in [0, 1] (got 2)"),
    ("weather.dark_variant=night", "weather.dark_variant must be 'train' or 'test' (got 'night')"),
    ("weather.weights={hail: 2}", "weather.weights must be a mapping of condition names to weights"),
    ("weather.weights={fog: -1}", "weather.weights must be a mapping of condition names to weights"),
    ("weather.render_size=0", "weather.render_size must be >= 1 (got 0)"),
])
def test_messages_say_what_a_good_value_is(setting: str, message: str, tmp_path: Path,
                                           no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "configs" / "demo-cpu.yaml"
    assert main(["train", "--config", str(path), "--out", str(tmp_path), "--set", setting]) == 2
    err = capsys.readouterr().err
    # the value came from --set, so the error names the --set, not the file
    assert err.startswith(f"mcgf: error: --set {setting}: {message}") and err.count("\n") == 1, err


def test_weights_of_conditions_not_drawn_are_refused(tmp_path: Path, no_work: None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "configs" / "demo-cpu.yaml"
    argv = ["train", "--config", str(path), "--out", str(tmp_path),
            "--set", "weather.conditions=[fog, rain]", "--set", "weather.weights={snow: 2}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weather.weights must be weights of conditions among" in err, err


def test_resume_checks_the_saved_config_with_its_overrides(tmp_path: Path, no_work: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    last = tmp_path / "last"
    last.mkdir()
    saved = load_config(REPO / "configs" / "demo-cpu.yaml")
    (last / "config.json").write_text(json.dumps({"format": "mcgf-checkpoint", "version": 1, **saved}))
    argv = ["train", "--out", str(tmp_path), "--resume", "--set", "model.restoration_width=12"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("--set model.restoration_width=12: model.restoration_width must be a positive "
            "multiple of 8 (got 12)") in err and "config.json" not in err


def test_options_dataclass_matches_the_model_signature() -> None:
    """The declared options are exactly MCGFModel's keywords, with the same defaults."""
    params = inspect.signature(MCGFModel).parameters
    fields = {f.name: f for f in dataclasses.fields(MCGFOptions)}
    assert set(fields) == set(params)
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        want = params[name].default
        assert default == (list(want) if isinstance(want, tuple) else want), name


def test_values_are_converted_and_only_given_options_are_returned() -> None:
    got = check_model_options("mcgf", {"img_size": 64.0, "restoration_mults": (1, 2),
                                       "dropout": 0}, "c.yaml")
    assert got == {"img_size": 64, "restoration_mults": [1, 2], "dropout": 0.0}
    assert isinstance(got["img_size"], int) and isinstance(got["dropout"], float)


def test_create_model_checks_values_too() -> None:
    with pytest.raises(UserError, match=r"create_model\('mcgf'\): model.restoration_width must be "
                       r"a positive multiple of 8 \(got 12\)"):
        create_model("mcgf", backbone_name="resnet18", num_classes=3, restoration_width=12)


def test_out_that_is_a_file_stops_before_work(tmp_path: Path, no_work: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "configs" / "demo-cpu.yaml"
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for argv in (["--config", str(path), "--out", str(notes)],
                 ["--config", str(path), "--out", str(notes / "run")],
                 ["--out", str(notes), "--resume"]):
        assert main(["train", *argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {argv[argv.index('--out') + 1]} is not a folder" in err, err
    assert notes.read_text() == "keep me"


def test_a_tilde_in_a_config_path_means_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    """A YAML file gets no shell: ``root: ~/data`` was looked up as a folder named ``~``."""
    from mcgf.training.config import parse_run_config

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "w.safetensors").write_bytes(b"")
    cfg = parse_run_config({"data": {"root": "~/u1652", "val_root": "~/val"},
                            "model": {"name": "mcgf", "weights": "~/w.safetensors"}}, "t.yaml")
    assert (cfg.data.root, cfg.data.val_root) == (str(tmp_path / "u1652"), str(tmp_path / "val"))
    assert cfg.model["weights"] == str(tmp_path / "w.safetensors")
    assert parse_run_config({"data": {"root": "u1652~"}}, "t.yaml").data.root == "u1652~"

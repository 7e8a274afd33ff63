from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.config import apply_overrides, load_config, section
from mcgf.errors import UserError


def test_load_and_override(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("synth:\n  views: 8\n  size: 128\n")
    cfg = apply_overrides(load_config(p), ["synth.views=4", "train.lr=1e-3", "train.flags=[1, 2]"])
    assert cfg == {"synth": {"views": 4, "size": 128}, "train": {"lr": 1e-3, "flags": [1, 2]}}
    assert load_config(p) == {"synth": {"views": 8, "size": 128}}  # not mutated


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(bad)
    with pytest.raises(UserError, match=r"section\.option=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(UserError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])
    with pytest.raises(UserError, match=r"unknown option synth\.bogus"):
        section({"synth": {"bogus": 1}}, "synth", ["views"], "f.yaml")


def test_override_into_an_empty_section(tmp_path: Path) -> None:
    """A section written with nothing under it (``train:``, e.g. every option commented
    out) is YAML null: an empty section, which an override fills in."""
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  # epochs: 3\nmodel:\n  backbone_args:\n")
    cfg = apply_overrides(load_config(p), ["train.epochs=4", "model.backbone_args.depth=2"])
    assert cfg == {"train": {"epochs": 4}, "model": {"backbone_args": {"depth": 2}}}


def test_a_key_written_twice_is_refused_not_overwritten(tmp_path: Path) -> None:
    """Plain YAML keeps the last of two equal keys: a second ``train:`` section would drop
    every option of the first without a word."""
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 30\n  lr: 0.001\nmodel: {}\ntrain:\n  seed: 1\n")
    with pytest.raises(UserError) as err:
        load_config(p)
    assert str(err.value) == (f"config file {p}: 'train' is written twice in one mapping "
                              "(lines 1 and 5): keep one")
    p.write_text("data: {root: a, root: b}\n")
    with pytest.raises(UserError, match=r"'root' is written twice in one mapping \(line 1\)"):
        load_config(p)
    # The same key in different mappings, and YAML merge keys, are fine.
    p.write_text("base: &b {lr: 1, seed: 2}\ntrain:\n  <<: *b\n  seed: 3\nmodel: {seed: 4}\n")
    assert load_config(p) == {"base": {"lr": 1, "seed": 2}, "train": {"lr": 1, "seed": 3},
                              "model": {"seed": 4}}


def test_text_options_keep_the_spelling_of_numbers(tmp_path: Path) -> None:
    """A folder called 0001 or 1e3 is that folder, from a file or from --set; options that
    take numbers still read numbers, and the config survives a deep copy and JSON."""
    import copy
    import json

    from mcgf.options import coerce

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  root: 0001\n  other: 010\n  epochs: 0003\n  lr: 1.50\n")
    cfg = apply_overrides(load_config(p), ["data.alt=1e3", "data.alt2=1_0", "data.n=7"])
    data = copy.deepcopy(cfg)["data"]
    assert [coerce(data[k], str) for k in ("root", "other", "alt", "alt2", "n")] == \
        ["0001", "010", "1e3", "1_0", "7"]
    assert coerce(data["epochs"], int) == 3 and type(coerce(data["epochs"], int)) is int
    assert coerce(data["lr"], float) == 1.5 and coerce(data["alt"], float) == 1000.0
    assert coerce(data["root"], str | None) == "0001"
    assert json.loads(json.dumps(data)) == {"root": 1, "other": 8, "epochs": 3, "lr": 1.5,
                                            "alt": 1000.0, "alt2": 10, "n": 7}

"""The loss options moved from ``train:`` to ``model:``: configs and checkpoints of the
former layout still load (configs with a one-line warning, checkpoints silently)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from mcgf.cli.main import main
from mcgf.errors import DeprecatedOptionWarning, UserError
from mcgf.models.checkpoint import read_config
from mcgf.training.config import parse_run_config
from mcgf.training.loop import finished_run, train
from tests.training.tiny_run import tiny_config, write_config, write_tree

LOSS = ("lambda_restore", "infonce", "consistency", "label_smoothing")


def _old_layout(cfg: dict) -> dict:
    """``cfg`` with its loss options under ``train:``, as configs were written before."""
    model = {k: v for k, v in cfg["model"].items() if k not in LOSS}
    moved = {k: v for k, v in cfg["model"].items() if k in LOSS}
    return {**cfg, "model": model, "train": {**cfg["train"], **moved}}


def test_former_train_keys_move_to_the_model_with_one_warning(tmp_path: Path) -> None:
    new = tiny_config(tmp_path, label_smoothing=0.1)
    with pytest.warns(DeprecatedOptionWarning) as caught:
        old = parse_run_config(_old_layout(new), "old.yaml")
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "\n" not in msg and msg.startswith("old.yaml: train.lambda_restore, train.infonce, "
                                              "train.label_smoothing moved to the model section")
    assert "write model.lambda_restore, model.infonce, model.label_smoothing instead" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert old == parse_run_config(new, "new.yaml")
    assert old.model["lambda_restore"] == 0.5 and old.model["label_smoothing"] == 0.1
    assert not hasattr(old.train, "lambda_restore")
    both = _old_layout(new)
    both["model"]["infonce"] = 0.3
    with pytest.raises(UserError, match=r"^x\.yaml: train\.infonce \(0\.1\) and model\.infonce "
                                        r"\(0\.3\) are both set: keep model\.infonce only$"):
        parse_run_config(both, "x.yaml")


def test_cli_prints_the_warning_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "old.yaml", _old_layout(tiny_config(tmp_path / "U")))
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "o"),
                 "--set", "train.epochs=0"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2
    assert err[0].startswith(f"mcgf: warning: {path}: train.lambda_restore, train.infonce moved")
    assert err[1].startswith("mcgf: error: ") and "train.epochs" in err[1]


def test_a_checkpoint_of_the_former_layout_resumes_and_counts_as_finished(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_old_layout(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_old_layout(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "U")
    cfg = tiny_config(root)
    full, part = tmp_path / "full", tmp_path / "part"
    train(parse_run_config(cfg, "t"), full, progress=False)
    train(parse_run_config(cfg, "t"), part, progress=False, stop_after=1)
    for run in (full, part):  # rewrite config.json as the former version wrote it
        path = run / "last" / "config.json"
        saved = json.loads(path.read_text())
        saved["train"].update({k: saved["model"].pop(k, d) for k, d in
                               zip(LOSS, (1.0, 0.0, 0.0, 0.0), strict=True)})
        path.write_text(json.dumps(saved))
    loaded = read_config(part / "last")
    assert {k: loaded["model"][k] for k in LOSS} == {"lambda_restore": 0.5, "infonce": 0.1,
                                                      "consistency": 0.0, "label_smoothing": 0.0}
    assert not set(LOSS) & set(loaded["train"])
    assert finished_run(full, parse_run_config(cfg, "t"))
    assert not finished_run(full, parse_run_config(tiny_config(root, infonce=0.2), "t"))
    # --resume without --config reads the old config.json; the run ends as the full one.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecatedOptionWarning)
        assert main(["train", "--out", str(part), "--resume", "--quiet"]) == 0
    from safetensors.torch import load_file

    a = load_file(str(full / "last" / "model.safetensors"))
    b = load_file(str(part / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

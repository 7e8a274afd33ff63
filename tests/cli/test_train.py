"""``mcgf train``'s own checks of its options."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.cli.main import main


@pytest.mark.parametrize("config", [False, True], ids=["saved-config", "with-config"])
def test_resume_without_a_checkpoint_says_to_train_first(
        config: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With or without --config, --resume into a folder with no checkpoint gets the same
    line: there is nothing to continue, train without --resume first."""
    from tests.training.tiny_run import tiny_config, write_config

    argv = ["train", "--out", str(tmp_path / "run"), "--resume", "--quiet"]
    if config:
        argv += ["--config", str(write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "d")))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"mcgf: error: --resume: {tmp_path / 'run' / 'last'} holds no resumable "
                   "checkpoint (train without --resume first)\n"), err

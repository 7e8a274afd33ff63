from __future__ import annotations

from pathlib import Path

import pytest

from mcgf.registry import Registry


def test_register_get_names_and_conflicts() -> None:
    reg: Registry = Registry("widget")

    @reg.register("b")
    def make_b() -> str:
        return "b"

    @reg.register("a")
    def make_a() -> str:
        return "a"

    assert reg.names() == ["a", "b"] and "a" in reg and "c" not in reg
    assert reg.get("a") is make_a and reg.get("c") is None
    reg.register("a")(make_a)  # same factory again: fine
    with pytest.raises(ValueError, match="a widget named 'a' is already registered"):
        reg.register("a")(make_b)


def test_a_taken_name_is_a_one_line_user_error_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A module of one's own registering an embedder or a layout under a built-in name
    stopped ``mcgf --import`` with a ValueError traceback."""
    from mcgf.cli.main import main
    from mcgf.errors import NameTaken, UserError

    assert issubclass(NameTaken, UserError) and issubclass(NameTaken, ValueError)
    code = {"clash_emb.py": "from mcgf.models.registry import register_embedder\n"
                            "register_embedder('thumbnail')(lambda: None)\n",
            "clash_layout.py": "from mcgf.data.layouts import DatasetLayout, register_layout\n"
                               "@register_layout\nclass Mine(DatasetLayout):\n"
                               "    name = 'university1652'\n"}
    for file, text in code.items():
        (tmp_path / file).write_text(text)
        assert main(["--import", str(tmp_path / file), "data", "check", str(tmp_path / "no")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mcgf: error: ") and \
            err.rstrip().endswith("is already registered: register yours under another name"), err

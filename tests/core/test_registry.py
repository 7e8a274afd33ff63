from __future__ import annotations

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

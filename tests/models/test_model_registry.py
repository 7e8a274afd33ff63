"""Registering models of one's own: what the options check lets through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from torch import nn

from mcgf.errors import UserError
from mcgf.models import model_registry
from mcgf.models.model_registry import check_model_options, create_model, register_model


class _Base(nn.Module):
    def __init__(self, dim: int = 4, depth: int = 1) -> None:
        super().__init__()
        self.dim, self.depth = dim, depth


class _Forwarding(_Base):
    """A subclass that passes its keywords on, as subclasses often do."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


@pytest.fixture
def registered() -> Iterator[None]:
    register_model("test-forwarding")(_Forwarding)
    register_model("test-base")(_Base)
    try:
        yield
    finally:
        for name in ("test-forwarding", "test-base"):
            model_registry._MODELS._factories.pop(name, None)


@pytest.mark.usefixtures("registered")
def test_a_factory_with_kwargs_takes_any_option() -> None:
    assert check_model_options("test-forwarding", {"dim": 8}, "my.yaml") == {"dim": 8}
    model = create_model("test-forwarding", dim=8, depth=2)
    assert (model.dim, model.depth) == (8, 2)


@pytest.mark.usefixtures("registered")
def test_an_unknown_option_names_the_factory_keywords_only() -> None:
    with pytest.raises(UserError, match=r"^my.yaml: unknown option model.width "
                                        r"\(known: depth, dim\)$"):
        check_model_options("test-base", {"width": 8}, "my.yaml")


def test_a_built_in_name_is_refused_at_registration() -> None:
    """Registering one's own model under a built-in name fails on that registration, and
    the built-in model stays the one registered (not a failure in its lazy import)."""
    with pytest.raises(UserError, match=r"^register_model\('lpn'\): a model named 'lpn' is "
                                        r"already registered: register yours under another name$"):
        register_model("lpn")(_Base)
    assert model_registry._MODELS.get("lpn") is not _Base
    assert "lpn" in model_registry.available_models()


def test_options_that_do_not_match_the_factory_are_refused_at_registration() -> None:
    """An options dataclass must declare each keyword of its factory (e.g. ``num_classes``,
    which training sets) and no other: a mismatch is one line at registration."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class DimOnly:
        dim: int = 4
        width: int = 2

    with pytest.raises(UserError, match=r"^register_model\('test-mismatch', options=DimOnly\): "
                                        r"_Base takes depth, which the options do not declare; the "
                                        r"options declare width, which _Base does not take: "):
        register_model("test-mismatch", options=DimOnly)(_Base)
    assert "test-mismatch" not in model_registry._MODELS
    with pytest.raises(UserError, match=r"options must be a dataclass"):
        register_model("test-mismatch", options=dict)(_Base)
    # A factory forwarding **kwargs may take options it does not name.
    register_model("test-mismatch", options=DimOnly)(_Forwarding)
    model_registry._MODELS._factories.pop("test-mismatch", None)
    model_registry._OPTIONS.pop("test-mismatch", None)


class _Weighted(nn.Module):
    def __init__(self, pretrained: bool = False, weights: str | None = None) -> None:
        super().__init__()
        self.pretrained, self.weights = pretrained, weights


class _ForwardingWeighted(_Weighted):
    def __init__(self, extra: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)


def test_initial_weights_are_turned_off_through_a_forwarding_factory() -> None:
    """A checkpoint of a subclass that forwards ``**kwargs`` is rebuilt without fetching or
    reading the initial weights its config names."""
    from mcgf.models.model_registry import without_initial_weights

    register_model("test-fw-weights")(_ForwardingWeighted)
    try:
        saved = {"extra": 2, "pretrained": True, "weights": "gone.safetensors"}
        assert without_initial_weights("test-fw-weights", saved) == {
            "extra": 2, "pretrained": False, "weights": None}
        assert without_initial_weights("test-fw-weights", {"extra": 2}) == {"extra": 2}
    finally:
        model_registry._MODELS._factories.pop("test-fw-weights", None)

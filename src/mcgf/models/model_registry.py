"""Trainable geo-localization models by name (MCGF, and later LPN, Muse-Net, MBEG, ...).

Each variant lives in its own module and registers a factory with
:func:`register_model`; :func:`create_model` builds one by name. Built-in modules are
imported on first use so that importing :mod:`mcgf.models` stays free of timm/diffusers.

A model declares its options as a typed dataclass (``register_model(name,
options=...)``, see :mod:`mcgf.options`): :func:`check_model_options` checks a config's
``model:`` section against it before anything is built, so a bad value is a one-line
error naming ``model.<option>``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from mcgf.errors import NameTaken, UserError
from mcgf.models.base import takes_keyword
from mcgf.options import parse_section
from mcgf.registry import USER_MODULES, Registry, factory_keywords

ModelFactory = Callable[..., nn.Module]
_MODELS: Registry[ModelFactory] = Registry("model")
# The options dataclass each model declared (see mcgf.options).
_OPTIONS: dict[str, type] = {}
# Modules whose import registers the built-in models.
_BUILTIN_MODULES = (
    "mcgf.models.mcgf_model",
    "mcgf.models.lpn",
    "mcgf.models.mbeg",
    "mcgf.models.sample4geo",
    "mcgf.models.musenet",
)
#: Options that fetch or read a model's initial weights, with the values that turn them
#: off: a model whose weights come from a checkpoint needs neither.
INITIAL_WEIGHTS_OFF: dict[str, Any] = {"pretrained": False, "weights": None}
#: Options that change how a model computes (memory, layout, passes), not its parameters or
#: what it is trained to do: a resumed run may change them, e.g. to fit a smaller GPU.
RUNTIME_OPTIONS: tuple[str, ...] = ("grad_checkpointing", "grad_checkpointing_blocks",
                                    "restoration_grad_checkpointing", "joint_views",
                                    "channels_last")


def register_model(name: str, *, options: type | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register ``factory(**kwargs) -> nn.Module`` (a class works) as ``name``.

    ``options``: a dataclass with one field per keyword of the factory, typed and
    constrained with :func:`mcgf.options.option`; configs are checked against it. Without
    it only the option names are checked.

    Raises:
        UserError: ``name`` is taken by another factory (a built-in model's included), or
            ``options`` is not a dataclass with one field per keyword of the factory.
    """
    register = _MODELS.register(name)

    def deco(factory: ModelFactory) -> ModelFactory:
        if getattr(factory, "__module__", None) not in _BUILTIN_MODULES:
            # A name taken by a built-in model is refused here, at the registration of
            # one's own, rather than later inside the built-in module's lazy import.
            _load_builtins()
        if options is not None:
            _check_options_match(name, factory, options)
        try:
            register(factory)
        except NameTaken as err:
            raise NameTaken(f"register_model({name!r}): {err}") from None
        if options is not None:
            _OPTIONS[name] = options
        return factory

    return deco


def _check_options_match(name: str, factory: ModelFactory, options: type) -> None:
    """Refuse an options dataclass whose fields are not the factory's keywords: a config
    could not set a keyword it lacks (``num_classes`` included, which training sets), and
    one the factory lacks would fail when the model is built."""
    where = f"register_model({name!r}, options={getattr(options, '__name__', repr(options))})"
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise UserError(f"{where}: options must be a dataclass (see mcgf.options)")
    named, takes_any = factory_keywords(factory)
    takes = set(named)
    fields = {f.name for f in dataclasses.fields(options)}
    what = getattr(factory, "__name__", "the factory")
    problems = [f"{what} takes {k}, which the options do not declare" for k in sorted(takes - fields)]
    if not takes_any:
        problems += [f"the options declare {k}, which {what} does not take" for k in sorted(fields - takes)]
    if problems:
        raise UserError(f"{where}: {'; '.join(problems)}: give the options one field per "
                        "keyword of the factory")


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _load_builtins()
    return _MODELS.names()


def _factory(name: str) -> ModelFactory:
    _load_builtins()
    factory = _MODELS.get(name)
    if factory is None:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(_MODELS.names())} "
                        f"(one of your own: import the module that registers it first, {USER_MODULES})")
    return factory


def model_options(name: str) -> set[str]:
    """Names of the keyword options the model registered as ``name`` accepts.

    Raises:
        UserError: unknown name.
    """
    factory = _factory(name)
    return set(inspect.signature(factory).parameters)


def takes_option(name: str, option: str) -> bool:
    """Whether the model registered as ``name`` accepts the keyword ``option`` (a factory
    with ``**kwargs`` accepts any).

    Raises:
        UserError: unknown name.
    """
    return takes_keyword(_factory(name), option)


def model_options_type(name: str) -> type | None:
    """The options dataclass the model registered as ``name`` declared, if any.

    Raises:
        UserError: unknown name.
    """
    _factory(name)
    return _OPTIONS.get(name)


def without_initial_weights(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the options of :data:`INITIAL_WEIGHTS_OFF` that the model registered
    as ``name`` takes turned off (nothing is downloaded or read when it is built). A
    factory with ``**kwargs`` (a subclass forwarding them) gets those of them that
    ``kwargs`` set turned off; unset ones are left out, since where they go is unknown.

    Raises:
        UserError: unknown name.
    """
    params, forwards = factory_keywords(_factory(name))
    return {**kwargs, **{k: v for k, v in INITIAL_WEIGHTS_OFF.items()
                         if k in params or (forwards and k in kwargs)}}


def check_model_options(name: str, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The options of a ``model:`` section (without ``name``) checked against what the
    model registered as ``name`` declares, converted to their types (``64.0`` → ``64``).

    Only the given keys are returned: defaults stay implicit, so that a saved config
    lists what its author set.

    Raises:
        UserError: unknown model, unknown option or bad value, naming ``model.<option>``
            and ``where``.
    """
    try:
        factory = _factory(name)
    except UserError as err:
        raise UserError(f"{where}: model.name: {err}") from None
    spec = _OPTIONS.get(name)
    if spec is None:
        named, takes_any = factory_keywords(factory)
        if takes_any:  # a factory with **kwargs (a subclass forwarding them) takes any name
            return dict(values)
        known = set(named)
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise UserError(f"{where}: unknown option model.{unknown[0]} "
                            f"(known: {', '.join(sorted(known))})")
        return dict(values)
    parsed = parse_section(spec, values, "model", where)
    return {k: getattr(parsed, k) for k in values}


def with_legacy_options(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of a saved model config completed with the model's ``legacy_options``.

    A model lists there the options whose default changed after checkpoints without them
    were written, with the value such a checkpoint was built with (e.g. MCGF's
    ``restoration_condition``: ``features+image``). Unknown names are returned unchanged.
    """
    try:
        factory = _factory(name)
    except UserError:
        return dict(kwargs)
    legacy = getattr(factory, "legacy_options", None) or {}
    return {**legacy, **kwargs}


def recorded_options(name: str, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the current value of each of the model's ``legacy_options`` that
    they lack, read from ``model``: a saved config must name them, since a missing key
    means the legacy value."""
    try:
        factory = _factory(name)
    except UserError:
        return dict(kwargs)
    out = dict(kwargs)
    for key in getattr(factory, "legacy_options", None) or {}:
        if key not in out and hasattr(model, key):
            out[key] = getattr(model, key)
    return out


def with_current_defaults(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus today's default of each ``legacy_options`` key they lack, so that a
    config written from them names those options explicitly. Unknown names: unchanged."""
    try:
        factory = _factory(name)
    except UserError:
        return dict(kwargs)
    params = inspect.signature(factory).parameters
    out = dict(kwargs)
    for key in getattr(factory, "legacy_options", None) or {}:
        if key not in out and key in params and params[key].default is not inspect.Parameter.empty:
            out[key] = params[key].default
    return out


def legacy_train_options(name: str) -> tuple[str, ...]:
    """Options of the model registered as ``name`` that older configs kept in their
    ``train:`` section (the model's ``legacy_train_options``; MCGF's loss weights).
    Unknown names: none."""
    try:
        factory = _factory(name)
    except UserError:
        return ()
    return tuple(getattr(factory, "legacy_train_options", None) or ())


def move_legacy_train_options(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of a whole config (``model:``, ``train:``, ... sections) with the options its
    model now takes in ``model:`` but that it still has under ``train:`` moved there.

    Returns:
        The config and the moved option names (empty: nothing to move).

    Raises:
        UserError: an option is set in both sections with different values.
    """
    out = dict(config)
    train, model = out.get("train"), out.get("model")
    if not isinstance(train, Mapping) or not isinstance(model, (Mapping, type(None))):
        return out, []
    model = dict(model or {})
    name = model.get("name", "mcgf")
    known = legacy_train_options(name) if isinstance(name, str) else ()
    moved = [k for k in known if k in train]
    if not moved:
        return out, []
    for key in moved:
        if key in model and model[key] != train[key]:
            raise UserError(f"train.{key} ({train[key]!r}) and model.{key} ({model[key]!r}) "
                            f"are both set: keep model.{key} only")
        model[key] = train[key]
    out["model"] = model
    out["train"] = {k: v for k, v in train.items() if k not in moved}
    return out, moved


def resolved_options(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` completed with the default of every option the model registered as
    ``name`` declares and they lack: what the model is built with. Two configs that
    resolve alike build the same model. Values are not checked; without a declared
    options dataclass, the factory's keyword defaults are used."""
    factory = _factory(name)
    spec = _OPTIONS.get(name)
    out: dict[str, Any] = {}
    if spec is not None:
        for f in dataclasses.fields(spec):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
    else:
        for p in inspect.signature(factory).parameters.values():
            if p.default is not inspect.Parameter.empty:
                out[p.name] = p.default
    return {**out, **kwargs}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Raises:
        UserError: unknown name, an option the model does not take, or a value its
            declared options reject.
    """
    factory = _factory(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise UserError(f"bad options for model {name!r}: {exc}") from exc
    return factory(**check_model_options(name, kwargs, f"create_model({name!r})"))

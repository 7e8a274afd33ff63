"""Typed training configuration read from the YAML sections ``data``, ``weather``,
``model`` and ``train``.

Each section becomes a frozen dataclass; unknown keys and bad values raise a one-line
:class:`~mcgf.errors.UserError` naming the option as ``section.key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mcgf.config import section
from mcgf.errors import UserError


@dataclass(frozen=True)
class DataConfig:
    """``data:`` — the University-1652 training split and how batches are drawn.

    Attributes:
        root: University-1652 root (holding ``train/drone`` and ``train/satellite``).
        locations_per_batch: ``P`` distinct locations per batch.
        drones_per_location: ``M`` drone views per location (plus its satellite tile).
        workers: DataLoader worker processes (0 loads in the main process).
        satellite_flip: random horizontal flips of satellite tiles (light augmentation).
        satellite_rotate: largest random rotation of satellite tiles in degrees (180: any
            heading, as drone views come from every heading; 0: none).
        drone_flip: random horizontal flips of drone images.
        scale_jitter, shift_jitter: random relative scale and shift of both views
            (0.1: ±10 %; 0: none).
        on_bad_image: ``stop`` (raise) or ``skip`` unreadable images.
        val_root: University-1652 root whose ``test`` split validates during training
            (empty: ``root``).
        layout: dataset layout of ``root`` and ``val_root`` (``university1652``,
            ``sues200``, ``denseuav``, optionally with sub-sets: ``sues200:150``; empty:
            detected from the folder tree, see :mod:`mcgf.data.layouts`).
    """

    root: str = ""
    locations_per_batch: int = 8
    drones_per_location: int = 2
    workers: int = 0
    satellite_flip: bool = True
    satellite_rotate: float = 0.0
    drone_flip: bool = False
    scale_jitter: float = 0.0
    shift_jitter: float = 0.0
    on_bad_image: str = "stop"
    val_root: str = ""
    layout: str = ""


@dataclass(frozen=True)
class WeatherConfig:
    """``weather:`` — synthetic weather applied to drone images on the fly.

    Attributes:
        conditions: ``random`` (all ten), ``none`` (clean), one condition name, or a list.
        seed: weather seed (mixed with the epoch, so each epoch sees fresh weather).
        dark_variant: ``train`` or ``test`` recipe of the dark condition.
        clean_fraction: share of drone images left clean before a condition is drawn.
    """

    conditions: str | list[str] = "random"
    seed: int = 0
    dark_variant: str = "train"
    clean_fraction: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """``train:`` — optimisation.

    Attributes:
        epochs: passes over every drone image.
        seed: fixes model init, batch plans, augmentation and dropout.
        lr, weight_decay: AdamW base learning rate and weight decay.
        layer_decay: per-layer LR decay of the encoder (``null``: none).
        warmup_steps: linear warmup length in optimizer steps.
        min_lr_ratio: final LR as a fraction of ``lr`` at the end of the cosine.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        lambda_restore: weight of the restoration loss (0 turns it off).
        infonce: weight of the InfoNCE loss (0 turns it off).
        consistency: weight of the weather-consistency loss, ``1 − cos`` between each
            weathered drone image's embedding and its clean twin's (0 turns it off; on,
            the clean twins run in the same encoder pass).
        label_smoothing: of the cross-entropy.
        grad_clip: max gradient norm (``null``: no clipping).
        amp: ``auto`` (bf16 autocast on CUDA only) or ``off``.
        device: ``auto``, ``cpu`` or ``cuda``.
        log_every: optimizer steps per row of ``log.csv``.
        eval_every: validate every this many epochs and after the last one (0: never);
            needs a validator (``mcgf train`` builds one from ``data.val_root``).
        val_retrieval: validation includes drone→satellite R@1/AP (``val_R@1``,
            ``val_AP``).
        restore_val_images: validation restores this many fixed weathered drone images
            of the validation split and logs ``val_restore_psnr`` / ``val_restore_ssim``
            (0: off; also off without a restoration branch or with ``lambda_restore`` 0).
        restore_val_steps: DDIM steps of that restoration.
    """

    epochs: int = 1
    seed: int = 0
    lr: float = 1e-4
    weight_decay: float = 0.05
    layer_decay: float | None = None
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    accumulate: int = 1
    lambda_restore: float = 1.0
    infonce: float = 0.0
    consistency: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    amp: str = "auto"
    device: str = "auto"
    log_every: int = 1
    eval_every: int = 0
    val_retrieval: bool = True
    restore_val_images: int = 16
    restore_val_steps: int = 10


@dataclass(frozen=True)
class RunConfig:
    """The whole training configuration; ``model`` is ``create_model`` kwargs with ``name``."""

    data: DataConfig
    weather: WeatherConfig
    train: TrainConfig
    model: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (what the checkpoint stores and ``from_dict`` reads)."""
        return {"data": asdict(self.data), "weather": asdict(self.weather),
                "train": asdict(self.train), "model": dict(self.model)}


SECTIONS = ("data", "weather", "train", "model")


def _build(cls: type, values: dict[str, Any], name: str, where: str) -> Any:
    """Instantiate ``cls`` from ``values`` coercing ints/floats; errors name ``name.key``."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        kind = str(f.type)
        try:
            if v is None and "None" in kind:
                out[f.name] = None
            elif kind.startswith("int"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
                    raise ValueError
                out[f.name] = int(v)
            elif kind.startswith("float"):
                # YAML 1.1 reads 1e-3 (no dot) as a string: accept numeric strings.
                if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                    raise ValueError
                out[f.name] = float(v)
            elif kind == "bool":
                if not isinstance(v, bool):
                    raise ValueError
                out[f.name] = v
            elif kind == "str":
                if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                    raise ValueError
                out[f.name] = str(v)
            else:
                out[f.name] = v
        except ValueError:
            raise UserError(f"{where}: {name}.{f.name} has a bad value {v!r} "
                            f"(expected {kind.replace(' | ', ' or ')})") from None
    return cls(**out)


def _section(config: Mapping[str, Any], cls: type, name: str, where: str) -> Any:
    """The dataclass ``cls`` built from section ``name`` (unknown keys rejected)."""
    return _build(cls, section(config, name, [f.name for f in fields(cls)], where), name, where)


def _check(ok: bool, where: str, option: str, value: Any, need: str) -> None:
    if not ok:
        raise UserError(f"{where}: {option} must be {need} (got {value!r})")


def parse_run_config(config: Mapping[str, Any], where: str) -> RunConfig:
    """Validate a loaded YAML config (after overrides) into a :class:`RunConfig`.

    Args:
        config: the nested mapping.
        where: how to name the config in errors (usually its file path).

    Raises:
        UserError: an unknown section or option, or a bad value, naming it.
    """
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise UserError(f"{where}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    data = _section(config, DataConfig, "data", where)
    weather = _section(config, WeatherConfig, "weather", where)
    train = _section(config, TrainConfig, "train", where)
    model = config.get("model") or {}
    if not isinstance(model, dict):
        raise UserError(f"{where}: 'model' must be a mapping of create_model options")
    model = {"name": "mcgf", **model}
    from mcgf.models.model_registry import with_current_defaults

    # Options whose absence in a saved config means a legacy value are written out.
    name = str(model["name"])
    model = {"name": name, **with_current_defaults(name, {k: v for k, v in model.items() if k != "name"})}
    if name == "mcgf":
        from mcgf.models.restoration import CONDITIONS

        cond = model.get("restoration_condition")
        _check(cond in CONDITIONS, where, "model.restoration_condition", cond,
               " or ".join(f"'{c}'" for c in CONDITIONS))

    _check(bool(data.root), where, "data.root", data.root, "the University-1652 folder")
    # BatchNorm in the head needs at least two satellite tiles per batch.
    _check(data.locations_per_batch >= 2, where, "data.locations_per_batch", data.locations_per_batch, ">= 2")
    _check(data.drones_per_location >= 1, where, "data.drones_per_location", data.drones_per_location, ">= 1")
    _check(data.workers >= 0, where, "data.workers", data.workers, ">= 0")
    _check(0 <= data.satellite_rotate <= 180, where, "data.satellite_rotate", data.satellite_rotate,
           "in [0, 180] degrees")
    _check(0 <= data.scale_jitter < 1, where, "data.scale_jitter", data.scale_jitter, "in [0, 1)")
    _check(0 <= data.shift_jitter < 1, where, "data.shift_jitter", data.shift_jitter, "in [0, 1)")
    _check(data.on_bad_image in ("stop", "skip"), where, "data.on_bad_image", data.on_bad_image,
           "'stop' or 'skip'")
    if data.layout:
        from mcgf.data.layouts import parse_layout

        parse_layout(data.layout, f"{where}: data.layout")
    cond = weather.conditions
    _check(isinstance(cond, str) or (isinstance(cond, list) and cond and all(isinstance(c, str) for c in cond)),
           where, "weather.conditions", cond, "'random', 'none', a condition name or a list of names")
    if cond != "none":
        from mcgf.weather import UnknownConditionError, WeatherTransform

        try:
            WeatherTransform(cond, seed=weather.seed, dark_variant=weather.dark_variant,
                             clean_fraction=weather.clean_fraction)
        except (UnknownConditionError, ValueError) as err:
            raise UserError(f"{where}: bad weather section: {str(err).splitlines()[0]}") from None
    t = train
    _check(t.epochs >= 1, where, "train.epochs", t.epochs, ">= 1")
    _check(t.lr > 0, where, "train.lr", t.lr, "> 0")
    _check(t.weight_decay >= 0, where, "train.weight_decay", t.weight_decay, ">= 0")
    _check(t.layer_decay is None or 0 < t.layer_decay <= 1, where, "train.layer_decay", t.layer_decay,
           "in (0, 1] or null")
    _check(t.warmup_steps >= 0, where, "train.warmup_steps", t.warmup_steps, ">= 0")
    _check(0 <= t.min_lr_ratio <= 1, where, "train.min_lr_ratio", t.min_lr_ratio, "in [0, 1]")
    _check(t.accumulate >= 1, where, "train.accumulate", t.accumulate, ">= 1")
    _check(t.lambda_restore >= 0, where, "train.lambda_restore", t.lambda_restore, ">= 0")
    _check(t.infonce >= 0, where, "train.infonce", t.infonce, ">= 0")
    _check(t.consistency >= 0, where, "train.consistency", t.consistency, ">= 0")
    _check(0 <= t.label_smoothing < 1, where, "train.label_smoothing", t.label_smoothing, "in [0, 1)")
    _check(t.grad_clip is None or t.grad_clip > 0, where, "train.grad_clip", t.grad_clip, "> 0 or null")
    _check(t.amp in ("auto", "off"), where, "train.amp", t.amp, "'auto' or 'off'")
    _check(t.device in ("auto", "cpu", "cuda"), where, "train.device", t.device, "'auto', 'cpu' or 'cuda'")
    _check(t.log_every >= 1, where, "train.log_every", t.log_every, ">= 1")
    _check(t.eval_every >= 0, where, "train.eval_every", t.eval_every, ">= 0")
    _check(t.restore_val_images >= 0, where, "train.restore_val_images", t.restore_val_images, ">= 0")
    _check(t.restore_val_steps >= 1, where, "train.restore_val_steps", t.restore_val_steps, ">= 1")
    return RunConfig(data=data, weather=weather, train=train, model=model)

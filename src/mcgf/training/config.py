"""Typed training configuration read from the YAML sections ``data``, ``weather``,
``model`` and ``train``.

Each section becomes a frozen dataclass; unknown keys and bad values raise a one-line
:class:`~mcgf.errors.UserError` naming the option as ``section.key``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mcgf.data.layouts import parse_layout
from mcgf.errors import DeprecatedOptionWarning, UserError
from mcgf.models.compile import BACKENDS as COMPILE_BACKENDS
from mcgf.models.compile import MODES as COMPILE_MODES
from mcgf.options import (
    Check,
    OptionError,
    above,
    at_least,
    checked,
    in_range,
    one_of,
    option,
    parse_section,
)
from mcgf.runtime import AMP_MODES
from mcgf.weather.conditions import CONDITIONS, DARK_VARIANTS, condition_weights


def _conditions_ok(value: str | list[str]) -> bool:
    if isinstance(value, str):
        return value in ("random", "none") or value in CONDITIONS
    return bool(value) and len(set(value)) == len(value) and all(c in CONDITIONS for c in value)


_ROOT = Check(lambda v: bool(v.strip()), "the University-1652 folder", ("",))
_WEATHER = Check(_conditions_ok, "'random', 'none', a condition or a list of distinct conditions "
                 f"({', '.join(CONDITIONS)})", ("hail", [], ["fog", "fog"]))


def _weights_fit(weights: dict[str, float], conditions: Sequence[str]) -> bool:
    """Whether ``weights`` are valid sampling weights of ``conditions`` (the weather
    package's own check, :func:`~mcgf.weather.conditions.condition_weights`)."""
    try:
        condition_weights(conditions, weights)
    except UserError:
        return False
    return True


_WEIGHTS = Check(lambda v: _weights_fit(v, CONDITIONS) and any(v.values()),
                 "a mapping of condition names to weights >= 0, not all 0",
                 ({"hail": 1}, {"fog": -1}, {"fog": 0}))
_FRACTION_OPEN = in_range(0, 1, hi_open=True)
# torch.manual_seed takes at most 64 bits, and each rank (and a resume with another number
# of processes, each epoch) adds to the seed: 63 bits leave room for that.
_SEED = Check(lambda v: 0 <= v < 2**63, "in [0, 2^63)", (-1, 2**63))
_COMPILE = Check(lambda v: isinstance(v, bool) or v in COMPILE_BACKENDS,
                 f"false, true or a torch.compile backend ({', '.join(COMPILE_BACKENDS)})",
                 ("fast",))


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
        color_jitter: colour jitter strength of both views (torchvision ``ColorJitter``
            with brightness, contrast and saturation ``v`` and hue ``min(v, 0.5)``; 0: none).
        on_bad_image: ``stop`` (raise) or ``skip`` unreadable images.
        val_root: University-1652 root whose ``test`` split validates during training
            (empty: ``root``).
        layout: dataset layout of ``root`` and ``val_root`` (``university1652``,
            ``sues200``, ``denseuav``, optionally with sub-sets: ``sues200:150``; empty:
            detected from the folder tree, see :mod:`mcgf.data.layouts`).
    """

    root: str = option("", _ROOT)
    # BatchNorm in the head needs at least two satellite tiles per batch.
    locations_per_batch: int = option(8, at_least(2))
    drones_per_location: int = option(2, at_least(1))
    workers: int = option(0, at_least(0))
    satellite_flip: bool = True
    satellite_rotate: float = option(0.0, in_range(0, 180))
    drone_flip: bool = False
    scale_jitter: float = option(0.0, _FRACTION_OPEN)
    shift_jitter: float = option(0.0, _FRACTION_OPEN)
    color_jitter: float = option(0.0, in_range(0, 1))
    on_bad_image: str = option("stop", one_of("stop", "skip"))
    val_root: str = ""
    layout: str = ""


@dataclass(frozen=True)
class WeatherConfig:
    """``weather:`` — synthetic weather applied to drone images on the fly.

    Attributes:
        conditions: ``random`` (all ten), ``none`` (clean), one condition name, or a list.
        seed: weather seed (mixed with the epoch, so each epoch sees fresh weather).
        dark_variant: ``train`` or ``test`` recipe of the dark condition.
        clean_fraction: share of drone images left clean before a condition is drawn
            (the draw itself may give ``normal`` too: ``random`` with 0.5 leaves 55 % clean).
        weights: sampling weight per condition (a condition not named: 1), e.g.
            ``{fog: 2, fog_rain: 2}``; ``null``: uniform.
        render_size: weather smaller drone images on a bicubic enlargement to this side,
            then area-resize them back, as the published weathered test sets were made
            (at 512 px); ``null``: at the images' own size.
        jpeg_quality: store each weathered drone image as a JPEG of this quality and
            decode it again, as the published weathered sets are stored; ``null``: no.
    """

    conditions: str | list[str] = field(default="random", metadata=checked(_WEATHER))
    seed: int = option(0, at_least(0))
    dark_variant: str = option("train", one_of(*DARK_VARIANTS))
    clean_fraction: float = option(0.0, in_range(0, 1))
    weights: dict[str, float] | None = field(default=None, metadata=checked(_WEIGHTS))
    render_size: int | None = option(None, at_least(1))
    jpeg_quality: int | None = option(None, in_range(1, 100))

    def check(self) -> None:
        """Weights may name only conditions that are drawn."""
        if not self.weights or self.conditions == "random":
            return
        drawn = [self.conditions] if isinstance(self.conditions, str) else self.conditions
        if not _weights_fit(self.weights, drawn):
            raise OptionError("weights", f"weights of conditions among weather.conditions ({', '.join(drawn)})")


@dataclass(frozen=True)
class TrainConfig:
    """``train:`` — optimisation.

    Attributes:
        epochs: passes over every drone image.
        seed: fixes model init, batch plans, augmentation, dropout and the model's own
            random draws (diffusion noise).
        lr, weight_decay: AdamW base learning rate and weight decay.
        layer_decay: per-layer LR decay of the encoder (``null``: none).
        warmup_steps: linear warmup length in optimizer steps.
        min_lr_ratio: final LR as a fraction of ``lr`` at the end of the cosine.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        grad_clip: max gradient norm (``null``: no clipping).
        amp: ``auto`` (bf16 autocast on CUDA only) or ``off``.
        device: ``auto``, ``cpu`` or ``cuda``.
        log_every: optimizer steps per row of ``log.csv``.
        grad_norms_every: measure the encoder gradient norm of each loss term
            (``grad_encoder_<term>``) on every this many rows of ``log.csv`` and on each
            epoch's last row (0: never). Each measurement costs up to one extra backward
            pass per term, so measuring on every row slows a small model's training by
            about a third.
        eval_every: validate every this many epochs and after the last one (0: never);
            needs a validator (``mcgf train`` builds one from ``data.val_root``).
        val_retrieval: validation includes drone→satellite R@1/AP (``val_R@1``,
            ``val_AP``).
        restore_val_images: validation restores this many fixed weathered drone images
            of the validation split and logs ``val_restore_psnr`` / ``val_restore_ssim``
            (0: off; also off without a restoration branch or with ``model.lambda_restore``
            0).
        restore_val_steps: DDIM steps of that restoration.
        compile: compile the model's encoder blocks (and the restoration denoiser) with
            ``torch.compile`` (:mod:`mcgf.models.compile`): ``false``, ``true``
            (inductor) or a backend name. Faster steps on a GPU after a first minute or
            so of compiling; the weights and checkpoints are those of the plain model.
        compile_mode: the ``torch.compile`` mode (``default``, ``reduce-overhead``,
            ``max-autotune``, ``max-autotune-no-cudagraphs``).
    """

    epochs: int = option(1, at_least(1))
    seed: int = option(0, _SEED)
    lr: float = option(1e-4, above(0))
    weight_decay: float = option(0.05, at_least(0))
    layer_decay: float | None = option(None, in_range(0, 1, lo_open=True))
    warmup_steps: int = option(0, at_least(0))
    min_lr_ratio: float = option(0.0, in_range(0, 1))
    accumulate: int = option(1, at_least(1))
    grad_clip: float | None = option(None, above(0))
    amp: str = option("auto", one_of(*AMP_MODES))
    device: str = option("auto", one_of("auto", "cpu", "cuda"))
    log_every: int = option(1, at_least(1))
    grad_norms_every: int = option(1, at_least(0))
    eval_every: int = option(0, at_least(0))
    val_retrieval: bool = True
    restore_val_images: int = option(16, at_least(0))
    restore_val_steps: int = option(10, in_range(1, 1000))
    compile: bool | str = field(default=False, metadata=checked(_COMPILE))
    compile_mode: str = option("default", one_of(*COMPILE_MODES))


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
#: ``data`` options that name folders.
FOLDER_OPTIONS = ("root", "val_root")


def stored_sections(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data``, ``weather`` and ``train`` sections of ``config`` (a
    :meth:`RunConfig.as_dict` or a checkpoint's ``config.json``) as a checkpoint stores
    them: the dataset folders made absolute against the working folder, so that
    ``mcgf train --resume`` without ``--config`` and ``mcgf report`` find the data from
    any working folder."""
    out = {k: config[k] for k in SECTIONS if k in config and k != "model"}
    data = out.get("data")
    if isinstance(data, dict):
        out["data"] = {**data, **{k: os.path.abspath(data[k]) for k in FOLDER_OPTIONS
                                  if isinstance(data.get(k), str) and data[k]}}
    return out


def parse_run_config(config: Mapping[str, Any], where: str, *, resume: bool = False) -> RunConfig:
    """Validate a loaded YAML config (after overrides) into a :class:`RunConfig`.

    Every value is checked here, before any data is read or model built: the ``data``,
    ``weather`` and ``train`` sections against their dataclasses, the ``model`` section
    against the options the registered model declares
    (:func:`mcgf.models.model_registry.check_model_options`).

    Args:
        config: the nested mapping.
        where: how to name the config in errors (usually its file path).

    The loss options older configs had under ``train:`` (``train.lambda_restore``,
    ``train.infonce``, ``train.consistency``, ``train.label_smoothing``) are model options
    now: they are moved to ``model:`` with a one-line
    :class:`~mcgf.errors.DeprecatedOptionWarning`.

    With ``resume`` the run continues from a checkpoint that brings its own weights, so the
    initial-weights options (``model.weights``, ``model.pretrained``) are kept as written
    but not used: the ``model.weights`` file need not exist any more.

    Raises:
        UserError: an unknown section or option, or a bad value, naming it as
            ``section.key``.
    """
    config = _amp_off(_move_loss_options(config, where))
    unknown = sorted(str(k) for k in config if k not in SECTIONS)
    if unknown:
        raise UserError(f"{where}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    data = parse_section(DataConfig, config.get("data"), "data", where)
    # A path written in a YAML file gets no shell: "~/data" means the home folder, as
    # it would on the command line.
    data = replace(data, **{k: os.path.expanduser(getattr(data, k)) for k in FOLDER_OPTIONS})
    weather = parse_section(WeatherConfig, config.get("weather"), "weather", where)
    train = parse_section(TrainConfig, config.get("train"), "train", where)
    model = config.get("model") or {}
    if not isinstance(model, Mapping):
        raise UserError(f"{where}: 'model' must be a mapping of create_model options (got {model!r})")
    from mcgf.models.model_registry import with_current_defaults

    name = model.get("name", "mcgf")
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: model.name must be a registered model name (got {name!r})")
    options = {k: v for k, v in model.items() if k != "name"}
    if isinstance(options.get("weights"), str):
        options["weights"] = os.path.expanduser(options["weights"])
    options = _check_model(name, options, where, resume)
    # Options whose absence in a saved config means a legacy value are written out.
    model = {"name": name, **with_current_defaults(name, options)}
    if data.layout.strip():
        parse_layout(data.layout, f"{where}: data.layout")
    return RunConfig(data=data, weather=weather, train=train, model=model)


def _check_model(name: str, options: dict[str, Any], where: str, resume: bool) -> dict[str, Any]:
    """The model options checked (:func:`~mcgf.models.model_registry.check_model_options`);
    on resume a ``weights`` path is only checked to be a string, not an existing file."""
    from mcgf.models.model_registry import check_model_options

    if not resume or options.get("weights") is None:
        return check_model_options(name, options, where)
    weights = options["weights"]
    checked = check_model_options(name, {**options, "weights": None}, where)
    if not isinstance(weights, str):
        raise UserError(f"{where}: model.weights must be a string or null (got {weights!r})")
    return {**checked, "weights": weights}


def _amp_off(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with ``train.amp: off`` as the word: YAML 1.1 reads a bare ``off`` (in a
    config file or ``--set train.amp=off``) as ``false``."""
    train = config.get("train")
    if not isinstance(train, Mapping) or train.get("amp") is not False:
        return config
    return {**config, "train": {**train, "amp": "off"}}


def _move_loss_options(config: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``config`` with the model options it still sets under ``train:`` moved to ``model:``,
    warning once per config."""
    from mcgf.models.model_registry import move_legacy_train_options

    if not isinstance(config.get("train"), Mapping):
        return config
    try:
        moved_config, moved = move_legacy_train_options(config)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if moved:
        keys = ", ".join(f"train.{k}" for k in moved)
        warnings.warn(f"{where}: {keys} moved to the model section: write "
                      f"{', '.join(f'model.{k}' for k in moved)} instead",
                      DeprecatedOptionWarning, stacklevel=3)
    return moved_config

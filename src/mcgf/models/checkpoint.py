"""Checkpoints: a folder holding weights, the model config and (optionally) training state.

The folder format and its readers live at the model level, so that everything that loads
a trained model (the ``checkpoint`` embedder, restoration, the report) does so without
the training code; what a resumed run does with the training state (optimizer,
scheduler, RNG streams) is :mod:`mcgf.training.resume`.

Layout of ``PATH/``::

    model.safetensors   weights (safetensors; a tensor shared between modules is stored
                        once, its other names listed in the file's "aliases" metadata)
    config.json         {"format": "mcgf-checkpoint", "version": 1, "mcgf_version": ...,
                         "model": {"name": ..., **create_model kwargs}, **extra config}
                        (training adds "weights_report": what loading the initial
                        weights did, or null; configs without it read alike)
    state.pt            optional: optimizer/scheduler state, counters, RNG states, fp16
                        loss scale

``state.pt`` holds only tensors, dicts, lists, tuples, numbers, strings and ``None``, so it
is read with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled
code. Weights use safetensors for the same reason and because it memory-maps.

The folder is written into a hidden sibling, fsynced, then renamed into place; a previous
checkpoint of the same name is swapped out only once the new one is complete. POSIX cannot
rename a folder over a non-empty one, so the swap is two renames: for a moment between them
``PATH`` does not exist, but it is never half-written; a process killed there leaves the
previous checkpoint as ``.PATH.old-*``, which :func:`recover_interrupted_save` puts back.

Reading checks the structure of each file before using it (``config.json`` a checkpoint
config whose model options the model accepts, ``model.safetensors`` readable tensors with
well-formed alias metadata, ``state.pt`` a training state of the expected shape): a file
that fails is a one-line :class:`~mcgf.errors.UserError` naming it and what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgf import __version__
from mcgf.errors import UserError
from mcgf.fileio import file_mode, fsync_dir, replace_dir
from mcgf.models.model_registry import (
    check_model_options,
    create_model,
    move_legacy_train_options,
    recorded_options,
    with_legacy_options,
    without_initial_weights,
)
from mcgf.safeload import load_plain, one_line

FORMAT = "mcgf-checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"


@dataclass
class TrainState:
    """Everything beyond the weights that an exact resume needs.

    Attributes:
        step: optimizer steps taken.
        epoch: epochs completed.
        optimizer: ``optimizer.state_dict()``.
        scheduler: ``lr_scheduler.state_dict()``.
        rng: :func:`~mcgf.training.resume.capture_rng_state` output (rank 0's under
            ``torchrun``).
        rank_rng: under ``torchrun``, every rank's RNG record, by rank (``None`` for a
            single process).
        scaler: the ``torch.amp.GradScaler`` state of fp16 training (``None`` otherwise).
    """

    step: int = 0
    epoch: int = 0
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    rank_rng: list[dict[str, Any]] | None = None
    scaler: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (what ``state.pt`` stores)."""
        return {"step": int(self.step), "epoch": int(self.epoch), "optimizer": self.optimizer,
                "scheduler": self.scheduler, "rng": self.rng, "rank_rng": self.rank_rng,
                "scaler": self.scaler}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        """Inverse of :meth:`as_dict` (unknown keys, e.g. the ``extra`` that earlier
        versions wrote, are ignored)."""
        scaler = data.get("scaler")
        return cls(step=int(data.get("step", 0)), epoch=int(data.get("epoch", 0)),
                   optimizer=data.get("optimizer"), scheduler=data.get("scheduler"),
                   rng=data.get("rng"), rank_rng=data.get("rank_rng"),
                   scaler=scaler if isinstance(scaler, dict) else None)


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns."""

    model: nn.Module
    config: dict[str, Any]
    train_state: TrainState | None = None


# --- save -----------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    model_config: Mapping[str, Any],
    *,
    extra_config: Mapping[str, Any] | None = None,
    train_state: TrainState | None = None,
) -> Path:
    """Write ``model`` (and optionally the training state) as a checkpoint folder at ``path``.

    Args:
        path: the checkpoint folder; an existing one is replaced only once the new one is
            complete.
        model: the model (its ``state_dict`` is saved; shared tensors once).
        model_config: ``{"name": <registered model>, **kwargs}`` such that
            ``create_model(name, **kwargs)`` rebuilds the architecture; JSON-able.
        extra_config: more top-level keys for ``config.json`` (e.g. the training config).
        train_state: optimizer/scheduler/RNG state for an exact resume (``state.pt``).

    Returns:
        ``path`` as a :class:`Path`.
    """
    if "name" not in model_config:
        raise ValueError("model_config needs the registered model 'name'")
    # Options whose absence means a legacy value are always written out.
    model_config = {"name": model_config["name"],
                    **recorded_options(str(model_config["name"]), model,
                                       {k: v for k, v in model_config.items() if k != "name"})}
    config: dict[str, Any] = {"format": FORMAT, "version": VERSION, "mcgf_version": _version(),
                              "model": dict(model_config)}
    for key, value in (extra_config or {}).items():
        if key in config:
            raise ValueError(f"extra_config may not set the reserved key {key!r}")
        config[key] = value
    text = json.dumps(config, indent=2, default=_json_default) + "\n"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _save_weights(model, tmp / WEIGHTS_FILE)
        if train_state is not None:
            with open(tmp / STATE_FILE, "wb") as fh:
                torch.save(train_state.as_dict(), fh)
                fh.flush()
                os.fsync(fh.fileno())
        # config.json last: a folder with a config is a complete one.
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(tmp)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def interrupted_save(path: str | Path) -> Path | None:
    """The previous checkpoint that a save of ``path`` killed between its two renames left
    aside (the newest complete ``.NAME.old-*``), or ``None`` (``path`` exists, or nothing
    is left aside). Only looks: :func:`recover_interrupted_save` puts it back."""
    path = Path(path)
    if path.exists() or path.is_symlink() or not path.parent.is_dir():
        return None
    complete = [d for d in path.parent.glob(f".{path.name}.old-*") if (d / CONFIG_FILE).is_file()]
    return max(complete, key=lambda d: d.stat().st_mtime_ns, default=None)


def recover_interrupted_save(path: str | Path) -> bool:
    """Undo what a save of the checkpoint ``path`` that was killed midway left behind.

    A kill between the two renames of the swap leaves no ``path`` and the previous
    checkpoint as ``.NAME.old-*``: it is put back (the newest complete one). Once ``path``
    exists, the hidden ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of killed saves are
    deleted. Call it before reading a checkpoint that a killed process may have been
    writing (``mcgf train --resume`` does); nothing may be saving to ``path`` meanwhile.

    Returns:
        Whether a previous checkpoint was put back.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return False
    olds = [d for d in parent.glob(f".{path.name}.old-*") if d.is_dir()]
    restored = False
    previous = interrupted_save(path)
    if previous is not None:
        try:
            os.replace(previous, path)
            fsync_dir(parent)
            restored = True
        except OSError:  # another process (a DDP rank) put it back first
            pass
    if path.is_dir():
        for leftover in [*olds, *parent.glob(f".{path.name}.tmp-*")]:
            if leftover.is_dir() and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return restored


def _save_weights(model: nn.Module, path: Path) -> None:
    """State dict → safetensors, each shared tensor once (first name in state-dict order).

    Unlike ``safetensors.torch.save_model`` the alias list is written in a fixed order, so
    equal weights give byte-identical files (the evaluation cache keys on their hash).
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    for name, t in model.state_dict().items():
        storage = t.untyped_storage().data_ptr() if t.numel() else None
        key = (storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if storage is not None and key in first:
            aliases[name] = first[key]
            continue
        if storage is not None:
            first[key] = name
        # A partial view of a storage already stored is saved as its own copy.
        overlaps = storage is not None and storage in storages
        tensors[name] = t.detach().clone() if overlaps else t.detach().contiguous()
        if storage is not None:
            storages.add(storage)
    tensors = {k: v.cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases, sort_keys=True)})
    # safetensors (0.8) creates the file with mode 0600: give the weights the
    # permissions of the folder's other files, so whoever reads the config reads them too.
    os.chmod(path, file_mode())
    _fsync_file(path)


def _load_weights(model: nn.Module, path: Path) -> None:
    """Inverse of :func:`_save_weights`; strict ``load_state_dict``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path), device="cpu")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    aliases = json.loads(meta.get("aliases", "{}"))
    if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise _Damaged("its \"aliases\" metadata is not a mapping of tensor names")
    for name, target in aliases.items():
        if target in tensors:
            tensors[name] = tensors[target]
    model.load_state_dict(tensors, strict=True)


class _Damaged(ValueError):
    """A checkpoint file whose contents do not have the expected structure."""


def _swap_into_place(tmp: Path, path: Path) -> None:
    if (path.exists() or path.is_symlink()) and (not path.is_dir() or path.is_symlink()):
        raise UserError(f"{path} exists and is not a checkpoint folder: remove it or "
                        "choose another path")
    replace_dir(tmp, path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"config value {obj!r} is not JSON-serialisable")


def _version() -> str:
    return __version__


# --- load -----------------------------------------------------------------------------------


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint folder for ``path``: the folder itself, or the folder of a file in it
    (so ``PATH/model.safetensors`` and ``PATH/config.json`` are accepted too).

    Raises:
        UserError: ``path`` does not exist.
    """
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS_FILE, CONFIG_FILE, STATE_FILE):
        return p.parent
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist: pass the folder that save_checkpoint "
                        "wrote (it holds config.json and model.safetensors)")
    if not p.is_dir():
        raise UserError(f"checkpoint {p} is a file, not an mcgf checkpoint folder (one "
                        "holding config.json and model.safetensors): pass the folder that "
                        "mcgf train wrote (OUT/last); a weights file of a backbone is read as "
                        "the initial weights of a training run (model.weights)")
    return p


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` of the checkpoint at ``path``.

    Model options that a config saved before they existed lacks are filled in with the
    value such a checkpoint was built with (the model's ``legacy_options``; for MCGF a
    missing ``restoration_condition`` is ``features+image``), and model options that an
    older config kept under ``train:`` (MCGF's loss weights) are moved to ``model``.

    Raises:
        UserError: missing or unreadable config, not an mcgf checkpoint, or a newer format.
    """
    folder = checkpoint_dir(path)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        if (folder / "last" / CONFIG_FILE).is_file():  # mcgf train's --out folder
            raise UserError(f"{folder} is a training run folder: pass its checkpoint {folder / 'last'}")
        raise UserError(f"{folder} is not an mcgf checkpoint: it has no {CONFIG_FILE}; pass the "
                        "folder that save_checkpoint or mcgf train wrote (mcgf train: OUT/last)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {cfg_path}: {one_line(err)} (the checkpoint is "
                        "damaged: save it again)") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{cfg_path} is not an mcgf checkpoint config (no "
                        f"\"format\": \"{FORMAT}\")")
    version = config.get("version")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{cfg_path} has an invalid format version {version!r}")
    if version > VERSION:
        raise UserError(f"{folder} is checkpoint format version {version}, newer than this "
                        f"mcgf ({_version()}) reads (up to {VERSION}): upgrade mcgf")
    model_cfg = config.get("model")
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("name"), str):
        raise UserError(f"{cfg_path} lacks the model section {{\"model\": {{\"name\": ...}}}}")
    # Options older configs kept under train: (loss weights) are model options now.
    try:
        config, _ = move_legacy_train_options(config)
    except UserError as err:
        raise UserError(f"{cfg_path}: {err}") from None
    model_cfg = config["model"]
    # A config saved before an option existed was built with the option's legacy value.
    name = model_cfg["name"]
    config["model"] = {"name": name, **with_legacy_options(
        name, {k: v for k, v in model_cfg.items() if k != "name"})}
    return config


def load_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    load_train_state: bool = False,
) -> LoadedCheckpoint:
    """Rebuild the model saved at ``path`` and load its weights strictly; model in ``eval()``.

    The architecture comes from ``config.json`` through
    :func:`mcgf.models.model_registry.create_model`, with ``pretrained=False`` and
    ``weights=None`` forced (nothing is downloaded or read besides the checkpoint).

    Args:
        path: the checkpoint folder (or a file inside it).
        map_location: device for the weights and training state.
        load_train_state: also read ``state.pt`` (an error if absent).

    Raises:
        UserError: a missing folder or file, a damaged file, not an mcgf checkpoint, a
            newer format, or weights that do not match the configured model.
    """
    from safetensors import SafetensorError

    folder = checkpoint_dir(path)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"checkpoint {folder} has no {WEIGHTS_FILE}: save it again")
    # The small files are checked before the model is built and the weights are read.
    state = read_train_state(folder, map_location) if load_train_state else None
    model_cfg = dict(config["model"])
    name = model_cfg.pop("name")
    where = str(folder / CONFIG_FILE)
    try:
        # A checkpoint brings its own weights: the initial ones are neither fetched nor read.
        model_cfg = without_initial_weights(name, model_cfg)
    except UserError as err:  # a model of one's own whose module was not imported
        raise UserError(f"{where}: model.name: {err}") from None
    options = check_model_options(name, model_cfg, where)
    model = create_model(name, **options)
    try:
        _load_weights(model, weights)
    except (SafetensorError, json.JSONDecodeError, _Damaged, OSError) as err:
        raise UserError(f"cannot read {weights}: {one_line(err)} (the file is damaged: "
                        "save the checkpoint again)") from None
    except RuntimeError as err:
        raise UserError(f"weights in {weights} do not match the model in "
                        f"{folder / CONFIG_FILE}: {one_line(err)}") from None
    model.to(map_location).eval()
    return LoadedCheckpoint(model, config, state)


def read_train_state(folder: str | Path, map_location: str | torch.device = "cpu") -> TrainState:
    """The training state (``state.pt``) of a checkpoint folder, without its model.

    The file is read without unpickling objects, then its structure is checked
    (:func:`train_state_problem`).

    Raises:
        UserError: no state file, a damaged one, or one that is not a training state;
            one line naming the file and what is wrong.
    """
    folder = checkpoint_dir(folder)
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        raise UserError(f"checkpoint {folder} has no {STATE_FILE} (it was saved without "
                        "training state): resume from a checkpoint saved with train_state")
    data = load_plain(state_path, "training state", "mcgf writes only tensors, numbers, "
                      "strings, lists and dicts there: resume from a checkpoint mcgf saved",
                      map_location=map_location)
    problem = train_state_problem(data)
    if problem is not None:
        raise UserError(f"{state_path} is not a training state saved by mcgf: {problem} "
                        "(resume from another checkpoint, or start a new run)")
    return TrainState.from_dict(data)


def train_state_problem(data: Any) -> str | None:
    """What keeps ``data`` (a loaded ``state.pt``) from being a :class:`TrainState`, in a
    few words, or ``None`` when its structure is right: ``step`` and ``epoch``
    non-negative integers; ``optimizer`` an optimizer state dict (``state``,
    ``param_groups`` with ``params``), ``scheduler`` and ``scaler`` mappings, ``rng`` a
    :func:`~mcgf.training.resume.capture_rng_state` record and ``rank_rng`` a list of
    them, each where present and not ``None``."""
    if not isinstance(data, dict):
        return f"it holds {_a(type(data).__name__)}, not a mapping"
    missing = [k for k in ("step", "epoch") if k not in data]
    if missing:
        have = ", ".join(repr(k) for k in list(data)[:4]) or "nothing"
        return f"it lacks {' and '.join(missing)} (it holds {have}{', ...' if len(data) > 4 else ''})"
    for key in ("step", "epoch"):
        if isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 0:
            return f"{key} is {data[key]!r}, not a non-negative integer"
    for key in ("scheduler", "scaler"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is {_a(type(data[key]).__name__)}, not a mapping"
    opt = data.get("optimizer")
    if opt is not None:
        groups = opt.get("param_groups") if isinstance(opt, dict) else None
        if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) \
                or not isinstance(groups, list) \
                or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
            return "optimizer is not an optimizer state (state, param_groups with params)"
    rng = data.get("rng")
    if rng is not None:
        problem = _rng_problem(rng)
        if problem is not None:
            return f"rng: {problem}"
    ranks = data.get("rank_rng")
    if ranks is not None:
        if not isinstance(ranks, list):
            return f"rank_rng is {_a(type(ranks).__name__)}, not a list"
        for i, rank_state in enumerate(ranks):
            problem = _rng_problem(rank_state)
            if problem is not None:
                return f"rank_rng[{i}]: {problem}"
    return None


def _rng_problem(rng: Any) -> str | None:
    """What keeps ``rng`` from being a :func:`~mcgf.training.resume.capture_rng_state` record, or ``None``."""
    if not isinstance(rng, dict):
        return f"{_a(type(rng).__name__)}, not a mapping"
    py = rng.get("python")
    if not (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple))
            and all(isinstance(x, int) for x in py[1])):
        return "python is not a random.getstate() record"
    np_state = rng.get("numpy")
    inner = np_state.get("state") if isinstance(np_state, dict) else None
    if not (isinstance(inner, dict) and isinstance(inner.get("key"), list) and "pos" in inner
            and isinstance(np_state.get("bit_generator"), str)):
        return "numpy is not a NumPy RNG state"
    t = rng.get("torch")
    if not (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.ndim == 1):
        return "torch is not a torch RNG state (a uint8 tensor)"
    if not isinstance(rng.get("cuda", []), list) or not isinstance(rng.get("generators", {}), dict):
        return "cuda must be a list and generators a mapping"
    return None


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"

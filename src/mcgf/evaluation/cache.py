"""On-disk cache of extracted features, so a 168k-image gallery is embedded once.

The key is a SHA-256 over everything that determines the features: the embedder's
``identity`` (e.g. a checkpoint hash or name + options), the preprocessing and test-time
augmentation description, any per-image transform (weather condition and seed), the
bad-image policy, and the data: every file's path, size and modification time. Editing,
adding or removing one image therefore misses the cache rather than returning stale
features.

Storage: ``<key>.safetensors`` when the ``safetensors`` package is installed, otherwise
``<key>.npy`` plus ``<key>.json``; never pickle. Every file is written atomically, and the
metadata file is written last, so an interrupted write is simply a cache miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcgf.fileio import atomic_path, atomic_write, write_json_atomic

#: Bump when the cache layout or the meaning of a key changes.
CACHE_VERSION = 1


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError:
        return None
    return st


def file_fingerprint(paths: Sequence[Path | str]) -> list[tuple[str, int, int]]:
    """``(absolute path, size, mtime in ns)`` of each file (``-1, -1`` if it is missing)."""
    out = []
    for p in paths:
        path = os.path.abspath(p)
        try:
            st = os.stat(path)
            out.append((path, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((path, -1, -1))
    return out


def cache_key(*, embedder: str, preprocess: str, files: Sequence[tuple[str, int, int]],
              extra: dict[str, Any] | None = None) -> str:
    """Hex SHA-256 of everything that determines a feature matrix."""
    h = hashlib.sha256()
    head = {"version": CACHE_VERSION, "embedder": embedder, "preprocess": preprocess,
            "extra": extra or {}, "count": len(files)}
    h.update(json.dumps(head, sort_keys=True).encode())
    for path, size, mtime in files:
        # surrogateescape: a file name that is not valid UTF-8 hashes as its bytes on disk.
        h.update(f"\n{path}\t{size}\t{mtime}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass
class CachedFeatures:
    """What a cache entry holds: features of the readable images and which ones those are."""

    features: np.ndarray  # (N, D) float32; rows of unreadable images are zero
    valid: np.ndarray  # (N,) bool


class FeatureCache:
    """A folder of cached feature matrices keyed by :func:`cache_key`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return (self.folder / f"{key}.safetensors", self.folder / f"{key}.npy",
                self.folder / f"{key}.json")

    def load(self, key: str) -> CachedFeatures | None:
        """The entry for ``key``, or ``None`` if absent or unreadable (a miss)."""
        sf, npy, meta = self._paths(key)
        st = _safetensors()
        # Any failure to parse is a miss: a damaged file (a full disk, a bad copy) is
        # recomputed and overwritten, never a crash of the run that meets it. The
        # safetensors error class is not an OSError or ValueError.
        if st is not None and sf.exists():
            try:
                data = st.load_file(str(sf))
                entry = CachedFeatures(data["features"].astype(np.float32, copy=False),
                                       data["valid"].astype(bool))
            except Exception:
                return None
            return entry if _well_formed(entry) else None
        if not (npy.exists() and meta.exists()):
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            features = np.load(npy, allow_pickle=False)
            if list(features.shape) != info.get("shape") or features.ndim != 2:
                return None
            valid = np.ones(features.shape[0], bool)
            invalid = np.asarray(info.get("invalid", []), dtype=np.int64)
            if ((invalid < 0) | (invalid >= len(valid))).any():
                return None
            valid[invalid] = False
        except Exception:
            return None
        return CachedFeatures(features.astype(np.float32, copy=False), valid)

    def store(self, key: str, entry: CachedFeatures, description: dict[str, Any]) -> Path:
        """Write the entry atomically; returns the path of the features file."""
        sf, npy, meta = self._paths(key)
        features = np.ascontiguousarray(entry.features, dtype=np.float32)
        invalid = np.flatnonzero(~entry.valid).tolist()
        st = _safetensors()
        # Written straight to the file: an in-memory image of it would double the peak
        # memory of a large gallery's features.
        if st is not None:
            with atomic_path(sf) as tmp:
                st.save_file({"features": features, "valid": entry.valid.astype(np.uint8)}, str(tmp),
                             metadata={"description": json.dumps(description)})
            return sf
        with atomic_write(npy, "wb") as fh:
            np.save(fh, features, allow_pickle=False)
        write_json_atomic(meta, {"shape": list(features.shape), "invalid": invalid,
                                 "description": description})
        return npy


def _well_formed(entry: CachedFeatures) -> bool:
    """Whether an entry is an ``(N, D)`` matrix with one ``valid`` flag per row."""
    return entry.features.ndim == 2 and entry.valid.shape == (entry.features.shape[0],)

"""Masked file names like University-160k's (15 random characters from [0-9A-Za-z])."""

from __future__ import annotations

import string

import numpy as np

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
NAME_LENGTH = 15


def masked_names(rng: np.random.Generator, count: int, length: int = NAME_LENGTH) -> list[str]:
    """``count`` distinct random names drawn from ``rng``.

    Names are also distinct ignoring letter case, so that the files stay apart on
    case-insensitive file systems (macOS, Windows).
    """
    alphabet = np.array(list(ALPHABET))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        draw = alphabet[rng.integers(0, len(ALPHABET), (count - len(names), length))]
        for row in draw:
            name = "".join(row)
            if name.lower() not in seen:
                seen.add(name.lower())
                names.append(name)
    return names

"""Option parsing shared by the subcommands (one-line errors naming the option)."""

from __future__ import annotations

from typing import Any

from mcgf.errors import UserError


def int_option(value: Any, option: str, minimum: int = 1) -> int:
    """``value`` as an integer of at least ``minimum``.

    Raises:
        UserError: not an integer, or below ``minimum``, naming ``option``.
    """
    try:
        out = int(str(value).strip())
    except ValueError:
        raise UserError(f"{option} must be an integer (got {value!r})") from None
    if out < minimum:
        raise UserError(f"{option} must be at least {minimum} (got {out})")
    return out

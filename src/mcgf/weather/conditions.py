"""The ten weather conditions, by name, as sequences of the recipe's augmenters.

The names and their order are the community's; :data:`CONDITIONS` is exported in that
order (a random choice of condition indexes into it). Each condition is a recipe: the
effects applied one after another, with the parameter values of the published imgaug
0.4.0 recipe (see ``docs/weather.md`` for the table).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

from mcgf.errors import UserError
from mcgf.weather.blur import WIND, MotionBlurParams
from mcgf.weather.fog import CloudParams
from mcgf.weather.particles import ParticleParams, rain, snow
from mcgf.weather.photometric import DARK_TEST, DARK_TRAIN, LIGHT, PhotometricParams
from mcgf.weather.rng import choose_from, choose_weighted

#: The condition of an unweathered image. The community's name (it is what the
#: University-WX folders, manifests and metric tables say), used everywhere as this one
#: constant.
CLEAN = "normal"

#: The conditions in the community's order (clean first, composites last); every other
#: list of condition names in mcgf derives from this one.
CONDITIONS: tuple[str, ...] = (
    CLEAN, "fog", "rain", "snow", "dark", "light", "fog_rain", "fog_snow", "rain_snow", "wind",
)

#: Variants of ``dark``: the training recipe (nearly black) or the milder test-set one.
DARK_VARIANTS: tuple[str, ...] = ("train", "test")

Effect = CloudParams | ParticleParams | PhotometricParams | MotionBlurParams

FOG = CloudParams()

_RECIPES: dict[str, tuple[Effect, ...]] = {
    CLEAN: (),
    "fog": (FOG,),
    "rain": (rain((0.05, 0.1)), rain((0.05, 0.1)), rain((0.1, 0.2)), rain((0.1, 0.2)),
             rain((0.05, 0.2))),
    "snow": (snow((0.5, 0.8)), snow((0.5, 0.8)), snow((0.6, 0.9)), snow((0.6, 0.9)),
             snow((0.5, 0.9))),
    "dark": (DARK_TRAIN,),
    "light": (LIGHT,),
    "fog_rain": (FOG, rain((0.05, 0.2)), rain((0.05, 0.2))),
    "fog_snow": (FOG, snow((0.5, 0.9)), snow((0.5, 0.9))),
    "rain_snow": (snow((0.5, 0.8)), rain((0.05, 0.1)), rain((0.1, 0.2)), rain((0.05, 0.2)),
                  snow((0.6, 0.9))),
    "wind": (WIND,),
}

_DESCRIPTIONS: dict[str, str] = {
    CLEAN: "unchanged",
    "fog": "one cloud layer (dense, low-frequency)",
    "rain": "five rain augmenters, 1-3 streak layers each",
    "snow": "five snowflake augmenters, 1-3 flake layers each",
    "dark": "brightness cut in a random luminance colour space (train: x0.2; test: x0.4)",
    "light": "brightness x1.6 +U(0,30) in a random luminance colour space",
    "fog_rain": "fog, then two rain augmenters",
    "fog_snow": "fog, then two snowflake augmenters",
    "rain_snow": "snow, three rain augmenters, snow",
    "wind": "15 px motion blur, random angle and direction",
}


class UnknownConditionError(UserError, ValueError):
    """A weather condition or dark variant name that does not exist."""


def check_condition(name: str, where: str | None = None) -> str:
    """Return ``name`` if it is a condition, else raise a one-line :class:`UnknownConditionError`.

    ``where`` names the option or file the name came from, for the message.
    """
    if name not in _RECIPES:
        origin = f" in {where}" if where else ""
        raise UnknownConditionError(
            f"unknown weather condition {name!r}{origin}: use one of {', '.join(CONDITIONS)}"
        )
    return name


def check_conditions(names: object, where: str = "conditions") -> tuple[str, ...]:
    """Validate a non-empty sequence of condition names (duplicates are an error)."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"{where} must be a sequence of condition names")
    out = tuple(check_condition(n, where) for n in names)  # type: ignore[union-attr]
    if not out:
        raise UnknownConditionError(f"{where} is empty: give at least one of {', '.join(CONDITIONS)}")
    if len(set(out)) != len(out):
        raise UnknownConditionError(f"{where} lists a condition twice: {', '.join(out)}")
    return out


def parse_conditions(text: str, where: str) -> list[str]:
    """The conditions a command-line option names: ``"all"`` or a comma-separated list.

    Names are checked with :func:`check_condition` (a one-line error naming ``where``);
    a name given twice is kept once, in its first place.
    """
    names = [p.strip() for p in text.split(",") if p.strip()]
    if [n.lower() for n in names] == ["all"]:
        return list(CONDITIONS)
    if not names:
        raise UnknownConditionError(f"{where} is empty: use 'all' or some of {', '.join(CONDITIONS)}")
    return list(dict.fromkeys(check_condition(n, where) for n in names))


def check_dark_variant(variant: str) -> str:
    """Return ``variant`` if it is ``"train"`` or ``"test"``, else raise."""
    if variant not in DARK_VARIANTS:
        raise UnknownConditionError(
            f"unknown dark variant {variant!r}: use 'train' (recipe) or 'test' (milder test set)"
        )
    return variant


def recipe(condition: str, dark_variant: str = "train") -> tuple[Effect, ...]:
    """The effects of ``condition`` in application order."""
    check_condition(condition)
    if condition == "dark":
        return (DARK_TEST,) if check_dark_variant(dark_variant) == "test" else (DARK_TRAIN,)
    return _RECIPES[condition]


def describe(condition: str) -> str:
    """One-line human description of a condition."""
    return _DESCRIPTIONS[check_condition(condition)]


def choose_condition(seed: int, key: str, conditions: object = CONDITIONS,
                     weights: Mapping[str, float] | None = None) -> str:
    """The reproducible random condition of image ``key``: uniform over ``conditions``,
    or with probability proportional to ``weights`` (a condition not named: weight 1).

    Depends only on ``(seed, key)``, the order of ``conditions`` and the weights; it uses
    a random stream of its own, separate from the weather's pixels.
    """
    names = check_conditions(conditions)
    if not weights:
        return choose_from(seed, key, names)
    return names[choose_weighted(seed, key, condition_weights(names, weights))]


def condition_weights(conditions: Sequence[str], weights: Mapping[str, float],
                      where: str = "weights") -> tuple[float, ...]:
    """The sampling weight of each of ``conditions`` (1 where ``weights`` names none).

    Raises:
        UnknownConditionError: ``weights`` names a condition outside ``conditions``, a
            weight is negative or not a number, or every weight is 0.
    """
    extra = [k for k in weights if k not in conditions]
    if extra:
        raise UnknownConditionError(f"{where} names {extra[0]!r}, which is not among the "
                                    f"conditions drawn ({', '.join(conditions)})")
    out = []
    for name in conditions:
        w = weights.get(name, 1.0)
        # numbers.Real takes NumPy scalars too (np.float32 is no float subclass).
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not w >= 0 or w == float("inf"):
            raise UnknownConditionError(f"{where}.{name} must be a number >= 0 (got {w!r})")
        out.append(float(w))
    if not any(out):
        raise UnknownConditionError(f"{where}: at least one condition needs a weight above 0")
    return tuple(out)

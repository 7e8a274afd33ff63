"""``WeatherTransform``: the dataset-side entry point (picklable, per-image reproducible).

A dataset calls ``transform(image, key)`` with the image's stable key (e.g.
``ImageRecord.key``) and gets the weathered image and the condition it received. The
transform holds only plain values, so it pickles into DataLoader workers, and the
result never depends on which worker renders which image.

``render_size`` renders the weather the way the published weathered test sets were made:
on the image enlarged to that side (bicubic), then area-resized back. A small training
image weathered at its own size gets streaks, flakes and fog structure drawn a pixel or
two wide; weathered at 512 px and shrunk, the same marks arrive thinner and blended into
the scene, which is what a model meets in University-WX-style queries. ``jpeg_quality``
then stores the weathered image as those sets are stored, as a JPEG (the faint colour a
veil leaves is what a second round of compression takes away first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from mcgf.weather.apply import apply_weather, check_image
from mcgf.weather.arrays import jpeg_round_trip
from mcgf.weather.conditions import (
    CLEAN,
    CONDITIONS,
    check_condition,
    check_conditions,
    check_dark_variant,
    choose_condition,
    condition_weights,
)
from mcgf.weather.rng import choose_weighted, image_rng, mix_seed


class WeatherTransform:
    """Apply weather to dataset images.

    Args:
        conditions: ``"random"`` (uniform over all ten), one condition name (always that
            one), or a sequence of names (uniform over them, in the given order).
        seed: fixes the choice of condition and every random draw, together with the key.
        dark_variant: ``"train"`` or ``"test"`` (see :func:`~mcgf.weather.apply_weather`).
        epoch: optional epoch number mixed into the seed (``set_epoch``) so that training
            sees fresh weather each epoch while staying reproducible; epoch 0 uses
            ``seed`` unchanged.
        clean_fraction: share of images left clean (``normal``) before the condition is
            drawn; the rest get a condition from ``conditions`` (``normal`` among them, where
            they hold it: ``"random"`` with 0.5 leaves 0.5 + 0.5 / 10 = 55 % clean). A
            clean share speeds up learning from scratch, when every image weathered hides
            too much. The draw is
            reproducible per (seed, epoch, key) like the condition.
        weights: sampling weight per condition name (a condition not named: 1), e.g.
            ``{"fog": 2}`` draws fog twice as often as each other condition; ``None``:
            uniform (the same draws as before weights existed).
        render_size: weather an image whose longer side is below this many pixels on a
            bicubic enlargement to that side, then area-resize it back (the published
            test sets were weathered at 512 px); ``None``: at the image's own size.
        jpeg_quality: pass each weathered image (not the clean ones) through a JPEG
            encoding at this quality, as the published weathered sets are stored;
            ``None``: no re-encoding.
    """

    def __init__(
        self,
        conditions: str | Sequence[str] = "random",
        seed: int = 0,
        dark_variant: str = "train",
        epoch: int = 0,
        clean_fraction: float = 0.0,
        weights: Mapping[str, float] | None = None,
        render_size: int | None = None,
        jpeg_quality: int | None = None,
    ) -> None:
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be 1..100 or None, got {jpeg_quality}")
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        if render_size is not None and int(render_size) < 1:
            raise ValueError(f"render_size must be a positive number of pixels or None, got {render_size}")
        self.render_size = None if render_size is None else int(render_size)
        if not 0.0 <= float(clean_fraction) <= 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1], got {clean_fraction}")
        self.clean_fraction = float(clean_fraction)
        if isinstance(conditions, str):
            self.conditions: tuple[str, ...] = (
                CONDITIONS if conditions == "random" else (check_condition(conditions),)
            )
        else:
            self.conditions = check_conditions(conditions)
        self.weights: dict[str, float] | None = None
        # Validated and laid out along ``conditions`` once, not per image.
        self._draw_weights: tuple[float, ...] | None = None
        if weights:
            self._draw_weights = condition_weights(self.conditions, weights)
            self.weights = {str(k): float(v) for k, v in weights.items()}
        self.seed = int(seed)
        self.dark_variant = check_dark_variant(dark_variant)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use another epoch's weather (DataLoader workers see it when re-created)."""
        self.epoch = int(epoch)

    @property
    def effective_seed(self) -> int:
        """The seed used for draws: ``seed`` at epoch 0, else a hash of (seed, epoch)."""
        return self.seed if self.epoch == 0 else mix_seed(self.seed, "epoch", self.epoch)

    def condition_for(self, key: str) -> str:
        """The condition image ``key`` receives."""
        if self.clean_fraction > 0:
            u = image_rng(self.effective_seed, key, "clean-fraction").random()
            if u < self.clean_fraction:
                return CLEAN
        if len(self.conditions) == 1:
            return self.conditions[0]
        if self._draw_weights is not None:
            # What choose_condition(..., weights) draws, without re-validating per image.
            return self.conditions[choose_weighted(self.effective_seed, key, self._draw_weights)]
        return choose_condition(self.effective_seed, key, self.conditions)

    def __call__(
        self, image: np.ndarray | Image.Image, key: str
    ) -> tuple[np.ndarray | Image.Image, str]:
        """Weather ``image`` (NumPy array or PIL image); returns (image, condition).

        A PIL image comes back as a PIL image of the same mode (modes other than
        L, RGB, RGBA and I;16 are converted to RGB first).
        """
        condition = self.condition_for(key)
        if isinstance(image, Image.Image):
            pil = image if image.mode in ("L", "RGB", "RGBA", "I;16") else image.convert("RGB")
            return Image.fromarray(self._render(np.asarray(pil), condition, key)), condition
        return self._render(image, condition, key), condition

    def _render(self, image: np.ndarray, condition: str, key: str) -> np.ndarray:
        def weather(x: np.ndarray) -> np.ndarray:
            return apply_weather(x, condition, seed=self.effective_seed, key=key,
                                 dark_variant=self.dark_variant)

        if condition == CLEAN:
            return weather(image)  # a copy, never re-encoded
        h, w = image.shape[:2]
        if self.render_size is None or max(h, w) >= self.render_size:
            out = weather(image)
        else:
            check_image(image)  # before OpenCV's resize meets an unsupported array
            scale = self.render_size / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            # OpenCV does not resize float16: go through float32 and back.
            src = image.astype(np.float32) if image.dtype == np.float16 else image
            big = cv2.resize(src, size, interpolation=cv2.INTER_CUBIC)
            if big.dtype.kind == "f":  # bicubic overshoots; the engine wants [0, 1]
                big = np.clip(big, 0.0, 1.0)
            out = cv2.resize(weather(big), (w, h), interpolation=cv2.INTER_AREA)
            out = out.reshape(image.shape).astype(image.dtype, copy=False)
        return out if self.jpeg_quality is None else jpeg_round_trip(out, self.jpeg_quality)

    def __repr__(self) -> str:
        return (
            f"WeatherTransform(conditions={list(self.conditions)!r}, seed={self.seed}, "
            f"dark_variant={self.dark_variant!r}, epoch={self.epoch}, "
            f"clean_fraction={self.clean_fraction}, weights={self.weights!r}, "
            f"render_size={self.render_size}, jpeg_quality={self.jpeg_quality})"
        )

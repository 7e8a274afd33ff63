"""Lightweight conditional diffusion denoiser: MCGF's restoration branch.

Ours, because no library ships a denoiser conditioned on an external encoder's feature
maps at this size: diffusers' UNets are built for latent/text conditioning and are far
above the 10 %-of-backbone budget. The noise schedule is diffusers' (``DDPMScheduler``
adds the training noise; ``DDIMScheduler`` gives the sampling timesteps and the same
schedule); the DDIM update (:func:`ddim_step`) is ``DDIMScheduler.step``'s formula at
η = 0, taken to the next listed timestep.

Two conditioning modes (``condition``):

``features`` (default)
    The denoiser is a decoder of the shared encoder's features: its only image input is
    ``x_t`` (3 ch), and everything it knows about the scene comes from the encoder's
    feature maps of the weathered image. Each map is normalised per position over its
    channels (:class:`~timm.layers.LayerNorm2d`: encoder stages differ in scale by orders
    of magnitude, and a ViT's residual stream grows with depth) and then projected. With
    no side path around the encoder, everything the ε loss needs about the clean image
    has to be present in, and is trained into, the encoder's features.
``features+image``
    WeatherDiffusion-style: ``x_t`` concatenated with the weathered image (6 ch), plus the
    encoder's final map, projected without normalisation. The denoiser can restore from
    the raw image alone, so little restoration signal has to pass through the encoder.
    Kept for the ablation and for checkpoints trained before the option existed.

Architecture: a small UNet with ``len(mults)`` scales of residual blocks (GroupNorm, SiLU,
3×3 convolutions), stride-2 convolutions down, nearest-neighbour upsampling and skip
concatenation up, no attention (keeps it light); timestep: sinusoidal embedding → MLP,
added inside every residual block; condition: one map per UNet scale plus one for the
middle block, each (normalised,) projected by a 1×1 convolution to that scale's width,
bilinearly resized to its resolution and added after the scale's first block on the way
down and in the middle block, so the loss gradient reaches the encoder at every scale;
output: ε prediction (3 ch), last convolution zero-initialised.

Default width 64 with scales (1, 2, 4) and 2 blocks per scale, conditioned on EVA-02-L's
1024-channel maps: 14.87 M parameters in either mode (4.9 % of EVA-02-L's 304.1 M; the
count does not depend on image size) — within the 10 % budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from mcgf.models.losses import ddpm_epsilon_loss

#: Training schedule of WeatherDiffusion / DDPM: linear β from 1e-4 to 0.02 over 1000 steps.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B,) → (B, dim)`` of (possibly fractional) timesteps."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Pre-activation residual block with an additive timestep embedding."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.t_proj = nn.Linear(t_dim, c_out)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.t_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


#: Conditioning modes of the restoration branch (see the module docstring).
CONDITIONS = ("features", "features+image")


class ConditionalDenoiser(nn.Module):
    """Small UNet predicting ε from ``x_t``, ``t`` and encoder feature maps.

    Args:
        cond_channels: channels of the condition maps: one int (the same map everywhere),
            or ``len(mults) + 1`` ints — one per UNet scale, finest first, then the middle
            block's.
        image_condition: also take the weathered image as input (``x_t ‖ weathered``,
            6 input channels; the ``features+image`` mode); otherwise 3 input channels.
        normalise: LayerNorm each condition map over channels at every position before
            its projection.
        width: channels at full resolution (multiple of 8).
        mults: width multiplier per scale; ``len(mults)`` scales (2–4 sensible).
        num_res_blocks: residual blocks per scale on the way down (one more on the way up).
        dropout: dropout inside residual blocks.
        grad_checkpointing: in training with autograd on, recompute each residual block
            (with its skip concatenation), each upsampling and the output head in the
            backward pass instead of keeping their intermediate activations: those are
            most of the denoiser's activation memory, and the cost is about one extra
            forward of the denoiser per step. Evaluation and sampling are unaffected, and
            so are parameter names and random streams (dropout masks are replayed).
    """

    def __init__(
        self,
        cond_channels: int | Sequence[int],
        *,
        image_condition: bool = False,
        normalise: bool = True,
        width: int = 64,
        mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        if width % 8 or width < 8:
            raise ValueError(f"width must be a positive multiple of 8, got {width}")
        if not mults or num_res_blocks < 1:
            raise ValueError("need at least one scale and one residual block per scale")
        self.levels = len(mults)
        conds = ([int(cond_channels)] * (self.levels + 1) if isinstance(cond_channels, int)
                 else [int(c) for c in cond_channels])
        if len(conds) != self.levels + 1:
            raise ValueError(f"cond_channels needs {self.levels + 1} entries (one per scale "
                             f"and the middle block), got {len(conds)}")
        self.cond_channels = tuple(conds)
        self.image_condition = image_condition
        chans = [width * m for m in mults]
        t_dim = 4 * width
        self.width = width
        self.t_mlp = nn.Sequential(nn.Linear(width, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(6 if image_condition else 3, width, 3, padding=1)
        # Parameter names match checkpoints of the image-conditioned branch (no norms).
        self.cond_proj = nn.ModuleList(nn.Conv2d(ci, c, 1) for ci, c in zip(conds, chans, strict=False))
        self.mid_cond = nn.Conv2d(conds[-1], chans[-1], 1)
        self.cond_norm = nn.ModuleList(_cond_norm(c, normalise) for c in conds[:-1])
        self.mid_norm = _cond_norm(conds[-1], normalise)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [width]
        c_prev = width
        for i, c in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(c_prev, c, t_dim, dropout))
                c_prev = c
                skips.append(c)
            self.down.append(blocks)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList(
            [ResBlock(c_prev, c_prev, t_dim, dropout), ResBlock(c_prev, c_prev, t_dim, dropout)]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(c_prev + skips.pop(), c, t_dim, dropout))
                c_prev = c
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = _norm(c_prev)
        self.conv_out = nn.Conv2d(c_prev, 3, 3, padding=1)
        # Zero output: the untrained branch predicts ε = 0, a stable start.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing on or off (see ``grad_checkpointing``)."""
        self.grad_checkpointing = enable

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        features: torch.Tensor | Sequence[torch.Tensor],
        weathered: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε prediction ``(B, 3, H, W)``; any ``H, W`` (padded internally to fit the scales).

        Args:
            x_t: noisy images ``(B, 3, H, W)`` in ``[-1, 1]``.
            t: timesteps ``(B,)``.
            features: one map ``(B, C, h, w)`` used everywhere, or one per UNet scale plus
                the middle block's (as in ``cond_channels``).
            weathered: the weathered images ``(B, 3, H, W)``: required with
                ``image_condition``, refused without it.
        """
        if self.image_condition != (weathered is not None):
            raise ValueError("this denoiser " + ("needs" if self.image_condition else "takes no")
                             + " weathered image")
        maps = [features] * (self.levels + 1) if isinstance(features, torch.Tensor) else list(features)
        if len(maps) != self.levels + 1:
            raise ValueError(f"expected {self.levels + 1} condition maps, got {len(maps)}")
        h_in, w_in = x_t.shape[-2:]
        mult = 2 ** (self.levels - 1)
        pad_h, pad_w = (-h_in) % mult, (-w_in) % mult
        x = x_t if weathered is None else torch.cat([x_t, weathered], dim=1)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        temb = self.t_mlp(timestep_embedding(t, self.width))
        # Checkpointing pays only when a backward pass will follow.
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()

        def run(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
            if not ckpt:
                return fn(*args)
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)

        h = self.conv_in(x)
        hs = [h]
        for i, blocks in enumerate(self.down):
            for j, block in enumerate(blocks):
                h = run(block, h, temb)
                if j == 0:
                    h = h + _inject(self.cond_norm[i], self.cond_proj[i], maps[i], h)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = run(self.mid[0], h, temb)
        h = h + _inject(self.mid_norm, self.mid_cond, maps[-1], h)
        h = run(self.mid[1], h, temb)
        for k, blocks in enumerate(self.up):
            for block in blocks:
                # Inside the checkpoint the concatenation is recomputed too, not stored.
                h = run(_cat_block(block), h, hs.pop(), temb)
            if k < self.levels - 1:
                # The upsampled map (4× the input) is what the convolution would keep.
                h = run(_upsample(self.upsample[k]), h)
        out = run(self._head, h)
        return out[..., :h_in, :w_in]

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(h)))


def _cat_block(block: ResBlock) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def fn(h: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return block(torch.cat([h, skip], dim=1), temb)

    return fn


def _upsample(conv: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(h: torch.Tensor) -> torch.Tensor:
        return conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))

    return fn


def _cond_norm(channels: int, normalise: bool) -> nn.Module:
    from timm.layers import LayerNorm2d

    return LayerNorm2d(channels) if normalise else nn.Identity()


def _inject(norm: nn.Module, proj: nn.Conv2d, features: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    # Normalise and project first (cheap at the encoder's coarse grid), then resize.
    c = proj(norm(features.to(h.dtype)))
    if c.shape[-2:] != h.shape[-2:]:
        c = F.interpolate(c, size=h.shape[-2:], mode="bilinear", align_corners=False)
    return c


class RestorationBranch(nn.Module):
    """The denoiser plus its diffusers schedules: training loss and DDIM restoration.

    Images are in ``[-1, 1]``. Training draws ``t ~ U{0..T-1}`` and ``ε ~ N(0, I)``,
    noises the clean image with ``DDPMScheduler.add_noise`` and returns the ε MSE.
    :meth:`restore` starts from Gaussian noise and runs DDIM (η = 0, so it is deterministic
    given the generator) over ``DDIMScheduler``'s ``steps`` "trailing" timesteps, each
    step going to the next of them (:func:`ddim_step`).

    Args:
        cond_channels: channels of the condition maps (see :class:`ConditionalDenoiser`).
        condition: ``"features"`` (normalised encoder features only) or
            ``"features+image"`` (also the weathered image; unnormalised features).
        grad_checkpointing: checkpoint the denoiser's activations in training (see
            :class:`ConditionalDenoiser`); the timesteps and noise are drawn outside it.
        **denoiser_kwargs: ``width``, ``mults``, ``num_res_blocks``, ``dropout``.
    """

    def __init__(
        self,
        cond_channels: int | Sequence[int],
        *,
        condition: str = "features",
        grad_checkpointing: bool = False,
        **denoiser_kwargs: object,
    ) -> None:
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler

        if condition not in CONDITIONS:
            raise ValueError(f"restoration_condition must be one of {CONDITIONS}, got {condition!r}")
        self.condition = condition
        image = condition == "features+image"
        self.denoiser = ConditionalDenoiser(
            cond_channels, image_condition=image, normalise=not image,
            grad_checkpointing=grad_checkpointing, **denoiser_kwargs,  # type: ignore[arg-type]
        )
        self.train_scheduler = DDPMScheduler(**SCHEDULE)
        # "trailing" spacing starts at t = T - 1, where the Gaussian start belongs (Lin et
        # al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"); the
        # default "leading" spacing starts lower, and with one step at t = 0, which returns
        # the starting noise.
        self.sample_scheduler = DDIMScheduler(**SCHEDULE, clip_sample=True,
                                              timestep_spacing="trailing")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn the denoiser's activation checkpointing on or off."""
        self.denoiser.set_grad_checkpointing(enable)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.train_scheduler.config.num_train_timesteps)

    @property
    def needs_image(self) -> bool:
        """Whether the denoiser also takes the weathered image (``features+image``)."""
        return self.denoiser.image_condition

    def training_loss(
        self,
        clean: torch.Tensor,
        features: torch.Tensor | Sequence[torch.Tensor],
        *,
        weathered: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """DDPM ε-prediction loss for one batch: clean target, condition maps and (only in
        ``features+image`` mode) the weathered image."""
        b = clean.shape[0]
        t = torch.randint(
            0, self.num_train_timesteps, (b,), device=clean.device, generator=generator
        )
        noise = torch.randn(clean.shape, device=clean.device, dtype=clean.dtype, generator=generator)
        x_t = self.train_scheduler.add_noise(clean, noise, t)
        return ddpm_epsilon_loss(self.denoiser(x_t, t, features, weathered), noise)

    @torch.no_grad()
    def restore(
        self,
        features: torch.Tensor | Sequence[torch.Tensor],
        *,
        size: tuple[int, int] | None = None,
        weathered: torch.Tensor | None = None,
        steps: int = 25,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample clean images ``(B, 3, H, W)`` in ``[-1, 1]`` with ``steps`` DDIM steps.

        ``(H, W)`` is ``size``, or the weathered image's size when it is given (it must be
        in ``features+image`` mode).
        """
        # A private copy: set_timesteps mutates the scheduler, and restore may run
        # concurrently with training on the shared module.
        from diffusers import DDIMScheduler

        ref = features if isinstance(features, torch.Tensor) else features[0]
        if weathered is not None:
            size = (weathered.shape[-2], weathered.shape[-1])
        if size is None:
            raise ValueError("restore needs size= (or the weathered image) for the output shape")
        dtype = weathered.dtype if weathered is not None else torch.float32
        scheduler = DDIMScheduler.from_config(self.sample_scheduler.config)
        scheduler.set_timesteps(steps)
        b = ref.shape[0]
        # One draw per image: CPU randn fills 16 values at a time and redraws a tail that
        # is not a multiple of 16, so one draw for the batch would give an image other
        # noise than a draw of it alone whenever 3·H·W is not a multiple of 16.
        x = torch.cat([torch.randn((1, 3, *size), device=ref.device, dtype=dtype, generator=generator)
                       for _ in range(b)])
        timesteps = [int(t) for t in scheduler.timesteps]
        for t, t_prev in zip(timesteps, [*timesteps[1:], -1], strict=True):
            t_batch = torch.full((b,), t, dtype=torch.long, device=ref.device)
            x = ddim_step(scheduler, self.denoiser(x, t_batch, features, weathered), x, t, t_prev)
        return x.clamp(-1.0, 1.0)


def ddim_step(scheduler: Any, eps: torch.Tensor, x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
    """One deterministic DDIM update (η = 0) of ``x`` from timestep ``t`` to ``t_prev``.

    The formula of ``DDIMScheduler.step`` with ``eta=0`` (predicted x_0, clipped when the
    scheduler's ``clip_sample`` is on, plus the ε direction), on the scheduler's
    ``alphas_cumprod``; ``t_prev < 0`` is the clean end (``final_alpha_cumprod``). The
    difference is the target: ``step`` goes to ``t - T // steps``, which is the next of its
    own ``"trailing"`` timesteps only when ``steps`` divides ``T`` (with 7 steps of 1000 it
    steps from 856 to 714 while the next timestep is 713, and ends at t = 0, not at x_0);
    here the caller passes the next listed timestep, so every step count lands where the
    following denoiser call believes the sample is.
    """
    config = scheduler.config
    a_t = scheduler.alphas_cumprod[t]
    a_prev = scheduler.alphas_cumprod[t_prev] if t_prev >= 0 else scheduler.final_alpha_cumprod
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    if config.clip_sample:
        x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps

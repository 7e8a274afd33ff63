"""Lightweight conditional diffusion denoiser: MCGF's restoration branch.

Ours, because no library ships a denoiser conditioned on an external encoder's feature
map at this size: diffusers' UNets are built for latent/text conditioning and are far
above the 10 %-of-backbone budget. The noise schedule and the samplers are diffusers'
(``DDPMScheduler`` for training noise, ``DDIMScheduler`` for sampling).

Design (WeatherDiffusion-style conditioning plus the shared encoder's features):

* input: ``x_t`` (noisy clean drone image, 3 ch) concatenated with the weathered drone
  image (3 ch); both in ``[-1, 1]``;
* a small UNet with ``len(mults)`` scales of residual blocks (GroupNorm, SiLU, 3×3
  convolutions), stride-2 convolutions down, nearest-neighbour upsampling and skip
  concatenation up, no attention (keeps it light);
* timestep: sinusoidal embedding → MLP, added inside every residual block;
* encoder features ``(B, C, h, w)``: a 1×1 convolution per UNet scale projects them to
  that scale's width; they are bilinearly resized to the scale's resolution and added
  after the scale's first block on the way down and in the middle block, so the loss
  gradient reaches the shared encoder at every scale;
* output: ε prediction (3 ch), last convolution zero-initialised.

Default width 64 with scales (1, 2, 4) and 2 blocks per scale: 14.87 M parameters for a
1024-channel encoder (EVA-02-L at 448 px; the count does not depend on image size),
4.9 % of EVA-02-L's 304.1 M — within the 10 % budget (width 96 would be 32.9 M, over it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mcgf.models.losses import ddpm_epsilon_loss

#: Training schedule of WeatherDiffusion / DDPM: linear β from 1e-4 to 0.02 over 1000 steps.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
}


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


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


class ConditionalDenoiser(nn.Module):
    """Small UNet predicting ε from ``(x_t, weathered, t, encoder features)``.

    Args:
        cond_dim: channels of the encoder feature map.
        width: channels at full resolution (multiple of 8).
        mults: width multiplier per scale; ``len(mults)`` scales (2–4 sensible).
        num_res_blocks: residual blocks per scale on the way down (one more on the way up).
        dropout: dropout inside residual blocks.
    """

    def __init__(
        self,
        cond_dim: int,
        *,
        width: int = 64,
        mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width % 8 or width < 8:
            raise ValueError(f"width must be a positive multiple of 8, got {width}")
        if not mults or num_res_blocks < 1:
            raise ValueError("need at least one scale and one residual block per scale")
        self.levels = len(mults)
        chans = [width * m for m in mults]
        t_dim = 4 * width
        self.width = width
        self.t_mlp = nn.Sequential(nn.Linear(width, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(6, width, 3, padding=1)
        self.cond_proj = nn.ModuleList(nn.Conv2d(cond_dim, c, 1) for c in chans)
        self.mid_cond = nn.Conv2d(cond_dim, chans[-1], 1)

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

    def forward(
        self,
        x_t: torch.Tensor,
        weathered: torch.Tensor,
        t: torch.Tensor,
        features: torch.Tensor,
    ) -> torch.Tensor:
        """ε prediction ``(B, 3, H, W)``; any ``H, W`` (padded internally to fit the scales)."""
        h_in, w_in = x_t.shape[-2:]
        mult = 2 ** (self.levels - 1)
        pad_h, pad_w = (-h_in) % mult, (-w_in) % mult
        x = torch.cat([x_t, weathered], dim=1)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        temb = self.t_mlp(timestep_embedding(t, self.width))
        features = features.to(x.dtype)

        h = self.conv_in(x)
        hs = [h]
        for i, blocks in enumerate(self.down):
            for j, block in enumerate(blocks):
                h = block(h, temb)
                if j == 0:
                    h = h + self._inject(self.cond_proj[i], features, h)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid[0](h, temb)
        h = h + self._inject(self.mid_cond, features, h)
        h = self.mid[1](h, temb)
        for k, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            if k < self.levels - 1:
                h = self.upsample[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h_in, :w_in]

    @staticmethod
    def _inject(proj: nn.Conv2d, features: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # Project first (cheap at the encoder's coarse grid), then resize to this scale.
        c = proj(features)
        if c.shape[-2:] != h.shape[-2:]:
            c = F.interpolate(c, size=h.shape[-2:], mode="bilinear", align_corners=False)
        return c


class RestorationBranch(nn.Module):
    """The denoiser plus its diffusers schedules: training loss and DDIM restoration.

    Images are in ``[-1, 1]``. Training draws ``t ~ U{0..T-1}`` and ``ε ~ N(0, I)``,
    noises the clean image with ``DDPMScheduler.add_noise`` and returns the ε MSE.
    :meth:`restore` starts from Gaussian noise and runs ``DDIMScheduler`` (η = 0, so it is
    deterministic given the generator) for ``steps`` steps.
    """

    def __init__(self, cond_dim: int, **denoiser_kwargs: object) -> None:
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler

        self.denoiser = ConditionalDenoiser(cond_dim, **denoiser_kwargs)  # type: ignore[arg-type]
        self.train_scheduler = DDPMScheduler(**SCHEDULE)
        self.sample_scheduler = DDIMScheduler(**SCHEDULE, clip_sample=True)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.train_scheduler.config.num_train_timesteps)

    def training_loss(
        self,
        clean: torch.Tensor,
        weathered: torch.Tensor,
        features: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """DDPM ε-prediction loss for one batch (clean target, weathered input, features)."""
        b = clean.shape[0]
        t = torch.randint(
            0, self.num_train_timesteps, (b,), device=clean.device, generator=generator
        )
        noise = torch.randn(clean.shape, device=clean.device, dtype=clean.dtype, generator=generator)
        x_t = self.train_scheduler.add_noise(clean, noise, t)
        return ddpm_epsilon_loss(self.denoiser(x_t, weathered, t, features), noise)

    @torch.no_grad()
    def restore(
        self,
        weathered: torch.Tensor,
        features: torch.Tensor,
        *,
        steps: int = 25,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample the clean image ``(B, 3, H, W)`` in ``[-1, 1]`` with ``steps`` DDIM steps."""
        # A private copy: set_timesteps mutates the scheduler, and restore may run
        # concurrently with training on the shared module.
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.sample_scheduler.config)
        scheduler.set_timesteps(steps, device=weathered.device)
        x = torch.randn(
            weathered.shape, device=weathered.device, dtype=weathered.dtype, generator=generator
        )
        b = weathered.shape[0]
        for t in scheduler.timesteps:
            eps = self.denoiser(x, weathered, t.expand(b).to(weathered.device), features)
            x = scheduler.step(eps, t, x, eta=0.0, generator=generator).prev_sample
        return x.clamp(-1.0, 1.0)

"""The restoration branch's DDIM sampler against diffusers and against DDIM's own algebra."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from mcgf.models.restoration import SCHEDULE, RestorationBranch


def branch(condition: str = "features") -> RestorationBranch:
    torch.manual_seed(0)
    b = RestorationBranch([8, 8, 8], condition=condition, width=8, mults=(1, 2)).eval()
    with torch.no_grad():  # the last convolution starts at zero: make ε depend on the input
        b.denoiser.conv_out.weight.normal_(0.0, 0.05)
    return b


@pytest.mark.parametrize("condition", ["features", "features+image"])
@pytest.mark.parametrize("steps", [1, 10, 25])
def test_step_counts_dividing_the_schedule_give_diffusers_ddim_bit_for_bit(condition: str,
                                                                        steps: int) -> None:
    b = branch(condition)
    feats = torch.randn(2, 8, 3, 3)
    weathered = torch.rand(2, 3, 12, 12) * 2 - 1 if condition != "features" else None
    out = b.restore(feats, size=(12, 12), weathered=weathered, steps=steps,
                    generator=torch.Generator().manual_seed(4))
    ref_sched = DDIMScheduler(**SCHEDULE, clip_sample=True, timestep_spacing="trailing")
    ref_sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(4)
    x = torch.cat([torch.randn(1, 3, 12, 12, generator=g) for _ in range(2)])
    with torch.no_grad():
        for t in ref_sched.timesteps:
            eps = b.denoiser(x, t.repeat(2), feats, weathered)
            x = ref_sched.step(eps, t, x, eta=0.0).prev_sample
    assert torch.equal(out, x.clamp(-1.0, 1.0))


@pytest.mark.parametrize("steps", [3, 7, 13, 25, 600])
def test_exact_noise_predictor_keeps_its_noise_and_ends_at_the_clean_image(steps: int,
                                                                         monkeypatch) -> None:
    # For an ε predictor that is exact for one clean image X (ε = (x - √ᾱ_t X) / √(1 - ᾱ_t)),
    # DDIM with η = 0 must move x_t to √ᾱ_s X + √(1 - ᾱ_s) ε at the next timestep s: the
    # noise the predictor sees stays the first step's, and the last step returns X.
    b = branch()
    alphas = b.sample_scheduler.alphas_cumprod.double()
    clean = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 1.6 - 0.8
    seen: list[torch.Tensor] = []

    def oracle(x, t, features, weathered):  # type: ignore[no-untyped-def]
        a = alphas[int(t[0])]
        eps = (x.double() - a.sqrt() * clean) / (1 - a).sqrt()
        seen.append(eps)
        return eps.float()

    monkeypatch.setattr(b.denoiser, "forward", oracle)
    g = torch.Generator().manual_seed(1)
    out = b.restore(torch.zeros(1, 8, 2, 2), size=(8, 8), steps=steps, generator=g)
    assert len(seen) == steps
    for eps in seen[1:]:
        assert (eps - seen[0]).abs().max().item() < 1e-4
    assert (out.double() - clean).abs().max().item() < 1e-5

"""``joint_views`` (drone and satellite images in one encoder pass) and a training forward
that never reads a value back from the device (each read would stall a GPU)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mcgf.errors import UserError
from mcgf.models.mcgf_model import MCGFModel
from mcgf.models.model_registry import check_model_options

VIT = {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8}


def vit(joint: bool, **kw: object) -> MCGFModel:
    torch.manual_seed(0)
    return MCGFModel("vit_tiny_patch16_224", 4, img_size=32, backbone_args=dict(VIT),
                     bottleneck_dim=16, dropout=0.0, restoration_width=8,
                     restoration_mults=[1, 2], restoration_blocks=1, restore_size=16,
                     consistency=1.0, twin_ce=True, joint_views=joint, **kw)


def batch(conditions: list[str]) -> dict:
    g = torch.Generator().manual_seed(1)
    n = len(conditions)
    return {"drone": torch.randn(n, 3, 32, 32, generator=g),
            "drone_clean": torch.randn(n, 3, 32, 32, generator=g),
            "drone_label": torch.arange(n) % 4, "drone_condition": conditions,
            "satellite": torch.randn(4, 3, 32, 32, generator=g), "satellite_label": torch.arange(4)}


def _grads(model: MCGFModel, b: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.train()
    terms = model.loss(b, generator=torch.Generator().manual_seed(3))
    terms["total"].backward()
    return ({k: v.detach() for k, v in terms.items()},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("conditions", [["fog", "rain", "snow", "dark"],
                                        ["fog", "normal", "rain", "normal"]])
def test_one_pass_computes_what_two_passes_do_on_a_layer_norm_encoder(
        conditions: list[str]) -> None:
    two, one = vit(False), vit(True)
    one.load_state_dict(two.state_dict())
    t2, g2 = _grads(two, batch(conditions))
    t1, g1 = _grads(one, batch(conditions))
    assert set(t1) == set(t2) == {"ce", "consistency", "restore", "total"}
    for k in t2:
        torch.testing.assert_close(t1[k], t2[k], rtol=1e-5, atol=1e-6)
    assert set(g1) == set(g2)
    for k in g2:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-6)


def test_one_pass_runs_the_encoder_once() -> None:
    counts = {}
    for joint in (False, True):
        model = vit(joint).train()
        calls: list[int] = []
        counts[joint] = calls
        model.drone_encoder.patch_embed.register_forward_hook(
            lambda _m, i, _o, calls=calls: calls.append(i[0].shape[0]))
        model.loss(batch(["fog", "normal", "rain", "dark"]))
    assert counts[False] == [4 + 3, 4]  # drones + their 3 clean twins, then the tiles
    assert counts[True] == [4 + 3 + 4]


def test_joint_views_needs_a_shared_encoder() -> None:
    with pytest.raises(UserError, match=r"cfg\.yaml: model\.joint_views .*share_encoder: false"):
        check_model_options("mcgf", {"backbone_name": "resnet18", "share_encoder": False,
                                     "joint_views": True}, "cfg.yaml")
    with pytest.raises(ValueError, match="share_encoder"):
        MCGFModel("resnet18", 3, share_encoder=False, joint_views=True, restoration=False)


class _Reads(TorchDispatchMode):
    """Records the ops that read a device value back to the host (``.item()``, ``bool()``
    of a tensor, the size of a boolean-mask selection)."""

    READS = ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.__name__.split(".")[0]
        if name in self.READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("joint", [False, True])
@pytest.mark.parametrize("conditions", [["fog", "rain", "snow", "dark"],
                                        ["fog", "normal", "rain", "normal"]])
def test_the_training_loss_reads_nothing_back(joint: bool, conditions: list[str]) -> None:
    """The paper objective (cross-entropy, consistency, clean twins, restoration): which
    rows are weathered is known on the host, so no mask is resolved on the device."""
    model = vit(joint).train()
    b = batch(conditions)
    with _Reads() as reads:
        terms = model.loss(b, generator=torch.Generator().manual_seed(0))
        terms["total"].backward()
    assert reads.seen == []
    assert torch.isfinite(terms["total"])

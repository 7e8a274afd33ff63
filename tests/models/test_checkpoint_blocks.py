"""``model.grad_checkpointing_blocks``: gradient checkpointing of the first N encoder blocks
only (:func:`mcgf.models.backbone.checkpoint_first_blocks`)."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

from mcgf.errors import UserError
from mcgf.models.backbone import checkpoint_first_blocks
from mcgf.models.model_registry import create_model
from tests.models.test_compile import batch28

EVA = {"backbone_name": "eva02_tiny_patch14_224", "num_classes": 4, "img_size": 28,
       "backbone_args": {"depth": 4}, "bottleneck_dim": 16, "dropout": 0.0,
       "restoration_width": 8, "restoration_mults": [1, 2], "restoration_blocks": 1,
       "restore_size": 16}


def _run(monkeypatch: pytest.MonkeyPatch, **options: object):
    calls: list[str] = []
    real = torch.utils.checkpoint.checkpoint

    def counting(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(type(getattr(fn, "__self__", fn)).__name__)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    torch.manual_seed(0)
    model = create_model("mcgf", **EVA, **options).train()
    terms = model.loss(batch28(), generator=torch.Generator().manual_seed(3))
    terms["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", real)
    return model, terms["total"].detach(), grads, calls


def test_only_the_first_blocks_are_recomputed_and_the_numbers_stay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain, loss0, g0, calls0 = _run(monkeypatch)
    part, loss1, g1, calls1 = _run(monkeypatch, grad_checkpointing=True,
                                   grad_checkpointing_blocks=2)
    assert calls0 == []
    # Two encoder passes (drone, satellite) through the first two of four blocks.
    assert calls1 == ["EvaBlock"] * 4
    assert [type(b).__name__ for b in part.drone_encoder.blocks] == ["EvaBlock"] * 4
    assert [getattr(type(b), "_mcgf_checkpointed", False)
            for b in part.drone_encoder.blocks] == [True, True, False, False]
    assert not part.drone_encoder.grad_checkpointing  # timm's own switch stays off
    assert list(part.state_dict()) == list(plain.state_dict())
    torch.testing.assert_close(loss1, loss0)
    assert g0.keys() == g1.keys()
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7)
    # Evaluation and no-grad passes are not checkpointed.
    with torch.no_grad():
        part.eval().embed(batch28()["drone"], "drone")


def test_every_block_without_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    model, *_ = _run(monkeypatch, grad_checkpointing=True)
    assert model.drone_encoder.grad_checkpointing  # timm's own, over all blocks
    assert not any(getattr(type(b), "_mcgf_checkpointed", False)
                   for b in model.drone_encoder.blocks)


def test_bad_uses_are_refused() -> None:
    with pytest.raises(UserError, match=r"model\.grad_checkpointing_blocks must be null"):
        from mcgf.models.model_registry import check_model_options

        check_model_options("mcgf", {"grad_checkpointing_blocks": 2}, "c.yaml")
    resnet = torch.nn.Sequential()
    with pytest.raises(ValueError, match="no list of blocks"):
        checkpoint_first_blocks(resnet, 2)
    vit = create_model("mcgf", **{**EVA, "restoration": False}).drone_encoder
    assert checkpoint_first_blocks(vit, 10) == 4  # more than there are: all of them
    assert checkpoint_first_blocks(vit, 1) == 1  # already checkpointed blocks stay so
    assert all(getattr(type(b), "_mcgf_checkpointed", False) for b in vit.blocks)


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_atto"])
def test_a_backbone_without_blocks_is_refused_in_one_line(backbone: str) -> None:
    with pytest.raises(UserError, match=r"model\.grad_checkpointing_blocks needs .*: set "
                       r"model\.grad_checkpointing_blocks: null"):
        create_model("mcgf", backbone_name=backbone, num_classes=3, img_size=32, restoration=False,
                     bottleneck_dim=8, grad_checkpointing=True, grad_checkpointing_blocks=2)

"""The trainable-model contract: MCGF meets it, and the check names what a model lacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mcgf.models.base import NotTrainableError, TrainableModel, check_trainable, missing_members
from mcgf.models.mcgf_model import MCGFModel
from mcgf.models.model_registry import create_model
from tests.training.toy_model import ToyNet


def tiny(**kw: object) -> MCGFModel:
    torch.manual_seed(0)
    return create_model("mcgf", backbone_name="resnet18", num_classes=3, img_size=16,
                        bottleneck_dim=8, restoration_width=8, restoration_mults=[1],
                        restoration_blocks=1,
                        backbone_args={"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16],
                                       "stem_width": 8}, **kw)


def test_mcgf_and_a_mixin_model_meet_the_contract() -> None:
    for model in (tiny(), ToyNet()):
        check_trainable(model)
        assert isinstance(model, TrainableModel) and missing_members(model) == []
    model = tiny(lambda_restore=0.3, infonce=0.2, consistency=0.1)
    assert model.loss_weights == {"ce": 1.0, "infonce": 0.2, "restore": 0.3, "consistency": 0.1}
    enc = {id(p) for p in model.encoder_parameters()}
    assert enc == {id(p) for p in model.drone_encoder.parameters()}
    assert ToyNet().needs_clean_targets is False and ToyNet().loss_weights == {"aux": 0.5}


@pytest.mark.parametrize(("options", "clean"), [
    ({}, True),                                              # branch on, lambda_restore 1
    ({"lambda_restore": 0.0}, False),                        # branch built, term off
    ({"restoration": False}, False),                         # no branch (lambda_restore 1)
    ({"restoration": False, "consistency": 0.5}, True),      # consistency pairs
])
def test_clean_targets_follow_the_terms_that_use_them(options: dict, clean: bool) -> None:
    assert tiny(**options).needs_clean_targets is clean


def test_loss_applies_the_models_own_weights() -> None:
    g = torch.Generator().manual_seed(0)
    batch = {"drone": torch.randn(4, 3, 16, 16, generator=g),
             "drone_clean": torch.randn(4, 3, 16, 16, generator=g),
             "drone_label": torch.tensor([0, 0, 1, 2]),
             "satellite": torch.randn(3, 3, 16, 16, generator=g),
             "satellite_label": torch.tensor([0, 1, 2])}
    model = tiny(lambda_restore=0.25, infonce=0.5, label_smoothing=0.1).eval()
    terms = model.loss(batch, generator=torch.Generator().manual_seed(1))
    assert set(terms) == {"ce", "infonce", "restore", "total"}
    torch.testing.assert_close(terms["total"],
                               terms["ce"] + 0.5 * terms["infonce"] + 0.25 * terms["restore"])
    # lambda_restore 0: the branch does not run at all.
    off = tiny(lambda_restore=0.0).eval()
    assert "restore" not in off.loss(batch)
    # label_smoothing reaches the cross-entropy.
    plain = tiny(lambda_restore=0.0).eval().loss(batch)["ce"]
    smooth = tiny(lambda_restore=0.0, label_smoothing=0.1).eval().loss(batch)["ce"]
    assert not torch.allclose(plain, smooth)


class _Embedder(nn.Module):
    """An evaluation-only model: embeds, but cannot be trained."""

    input_size = (16, 16)

    def embed(self, images: torch.Tensor, view: str) -> torch.Tensor:
        return images.flatten(1)


class _OldLoss(ToyNet):
    """The former signature: weights passed in, no generator."""

    def loss(self, batch, lambda_restore=1.0):  # type: ignore[override]
        return super().loss(batch)


def test_check_names_everything_a_model_lacks() -> None:
    with pytest.raises(NotTrainableError) as err:
        check_trainable(_Embedder(), "viewer")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model 'viewer' (_Embedder) cannot be trained")
    for name in ("mean", "std", "needs_clean_targets", "loss_weights", "loss()",
                 "param_groups()", "encoder_parameters()"):
        assert name in msg
    assert "input_size" not in msg and "embed()" not in msg
    assert missing_members(_OldLoss()) == ["loss(batch, *, generator=None)"]
    from mcgf.errors import UserError

    assert isinstance(err.value, UserError)  # the command line prints it as one line


@pytest.mark.parametrize(("attr", "value", "message"), [
    ("input_size", 16, r"input_size must be \(height, width\), two positive integers \(got 16\)"),
    ("input_size", (16.0, 16), r"input_size must be .*\(got \(16.0, 16\)\)"),
    ("input_size", (0, 16), r"input_size must be .*\(got \(0, 16\)\)"),
    ("mean", 0.5, r"mean must be three numbers, one per colour channel \(got 0.5\)"),
    ("std", (0.5, 0.5, 0.0), r"std must be three positive numbers, one per colour channel"),
])
def test_an_input_spec_the_loader_cannot_use_is_refused(attr: str, value: object,
                                                         message: str) -> None:
    """A wrong ``input_size``, ``mean`` or ``std`` stops the run before the data are read,
    naming the attribute, instead of failing inside the loader."""
    model = ToyNet()
    setattr(model, attr, value)
    with pytest.raises(NotTrainableError, match=rf"^model 'toy' \(ToyNet\) cannot be trained: {message}"):
        check_trainable(model, "toy")


def test_numpy_and_list_input_specs_are_accepted() -> None:
    import numpy as np

    model = ToyNet()
    model.input_size = [np.int64(16), 16]  # type: ignore[assignment]
    model.mean, model.std = [0.5, 0.5, 0.5], (np.float32(0.2), 1, 0.3)  # type: ignore[assignment]
    check_trainable(model, "toy")


def test_param_groups_are_checked_against_the_models_parameters() -> None:
    """Trainable parameters that no group holds are named; a parameter in two groups, or
    one that is not the model's, is refused in one line."""
    from mcgf.models.base import unoptimised_parameters

    model = ToyNet()
    assert unoptimised_parameters(model, model.param_groups(0.1, 0.0)) == []
    encoder_only = [{"params": list(model.encoder.parameters())}]
    assert unoptimised_parameters(model, encoder_only) == [
        n for n, _ in model.named_parameters() if not n.startswith("encoder.")] != []
    model.classifier.requires_grad_(False)  # frozen parameters need no group
    assert unoptimised_parameters(model, encoder_only) == []
    first = next(model.encoder.parameters())
    with pytest.raises(NotTrainableError, match=r"^model 'toy' \(ToyNet\) cannot be trained: its "
                                                r"param_groups\(\) hold encoder\.\S+ twice"):
        unoptimised_parameters(model, [*encoder_only, {"params": [first]}], "toy")
    with pytest.raises(NotTrainableError, match=r"hold a parameter of shape \(2,\) that is not"):
        unoptimised_parameters(model, [nn.Parameter(torch.zeros(2))], "toy")

"""IBN-Net-a layers in the MCGF model's ResNet encoder (``model.ibn_stages``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mcgf.errors import UserError
from mcgf.models.ibn import IBN
from mcgf.models.model_registry import create_model

TINY = {"backbone_name": "resnet18", "num_classes": 3, "img_size": 32, "restoration": False,
        "bottleneck_dim": 16,
        "backbone_args": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "stem_width": 8}}


def _ibn_layers(model: torch.nn.Module) -> dict[str, IBN]:
    return {n: m for n, m in model.drone_encoder.named_modules() if isinstance(m, IBN)}


def test_ibn_stages_replace_the_first_norm_of_their_blocks_only() -> None:
    model = create_model("mcgf", **TINY, ibn_stages=[1, 3], ibn_ratio=0.25)
    layers = _ibn_layers(model)
    assert sorted(layers) == ["layer1.0.bn1", "layer3.0.bn1"]
    assert [layer.half for layer in layers.values()] == [2, 8]  # 25 % of 8 and of 32 channels
    assert not _ibn_layers(create_model("mcgf", **TINY))


def test_instance_norm_half_removes_an_images_own_contrast() -> None:
    """A per-image affine change of the first block's input leaves the IN half's output as
    it was (up to the affine of IN), while a plain BN output moves with it."""
    model = create_model("mcgf", **TINY, ibn_stages=[1]).eval()
    layer = model.drone_encoder.layer1[0].bn1
    x = torch.randn(2, 8, 8, 8)
    changed = x * torch.tensor([0.3, 2.0]).view(2, 1, 1, 1) + torch.tensor([1.5, -0.7]).view(2, 1, 1, 1)
    a, b = layer(x), layer(changed)
    torch.testing.assert_close(a[:, :layer.half], b[:, :layer.half], atol=1e-3, rtol=1e-3)
    assert (a[:, layer.half:] - b[:, layer.half:]).abs().mean() > 0.5


def test_initial_weights_survive_the_conversion(tmp_path: Path) -> None:
    """A weights file for the plain ResNet loads first; the BN half of each IBN layer then
    holds its channels' BN tensors and the rest of the encoder is unchanged."""
    torch.manual_seed(3)
    plain = create_model("mcgf", **TINY)
    bn = plain.drone_encoder.layer1[0].bn1
    for norm in (bn, plain.drone_encoder.bn1):
        for t in (norm.weight.data, norm.bias.data, norm.running_mean, norm.running_var):
            t.copy_(torch.rand_like(t) + 0.5)
    state = {k: v.contiguous() for k, v in plain.drone_encoder.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.manual_seed(4)  # a different random init: only the file can make them agree
    model = create_model("mcgf", **TINY, ibn_stages=[1], weights=str(tmp_path / "w.safetensors"))
    ibn = model.drone_encoder.layer1[0].bn1
    torch.testing.assert_close(ibn.BN.running_var, bn.running_var[ibn.half:])
    torch.testing.assert_close(ibn.BN.weight, bn.weight[ibn.half:])
    torch.testing.assert_close(ibn.IN.weight, torch.ones(ibn.half))
    torch.testing.assert_close(model.drone_encoder.conv1.weight, plain.drone_encoder.conv1.weight)
    # IBN-b: the stem's instance norm takes the stem BN's affine.
    stem = plain.drone_encoder.bn1
    model_b = create_model("mcgf", **TINY, ibn_stages=[1], ibn_mode="b",
                           weights=str(tmp_path / "w.safetensors"))
    torch.testing.assert_close(model_b.drone_encoder.bn1.weight, stem.weight)
    torch.testing.assert_close(model_b.drone_encoder.bn1.bias, stem.bias)


def test_separate_encoders_both_get_ibn_and_the_checkpoint_round_trips(tmp_path: Path) -> None:
    from mcgf.training import load_checkpoint, save_checkpoint

    model = create_model("mcgf", **TINY, ibn_stages=[2], share_encoder=False)
    assert len(_ibn_layers(model)) == 1
    assert isinstance(model.satellite_encoder.layer2[0].bn1, IBN)
    model.loss({"drone": torch.randn(4, 3, 32, 32), "drone_label": torch.tensor([0, 0, 1, 2]),
                "satellite": torch.randn(3, 3, 32, 32), "satellite_label": torch.tensor([0, 1, 2])})
    model.eval()  # the step above moved the BN statistics away from their initial values
    save_checkpoint(tmp_path / "ck", model, {"name": "mcgf", **TINY, "ibn_stages": [2],
                                             "share_encoder": False})
    loaded = load_checkpoint(tmp_path / "ck").model
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x, "satellite"), model.embed(x, "satellite"))


@pytest.mark.parametrize(("options", "message"), [
    ({"ibn_stages": [0]}, r"model.ibn_stages must be a list of distinct stages"),
    ({"ibn_stages": [1, 1]}, r"model.ibn_stages must be a list of distinct stages"),
    ({"ibn_ratio": 1.0}, r"model.ibn_ratio"),
    ({"ibn_mode": "c"}, r"model.ibn_mode"),
    ({"ibn_stages": [1], "backbone_name": "vit_tiny_patch16_224", "backbone_args": None},
     r"model.ibn_stages must be \[\] with backbone_name 'vit_tiny_patch16_224'"),
])
def test_bad_ibn_options_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        create_model("mcgf", **{**TINY, **options})
    assert "\n" not in str(err.value)


def test_ibn_b_instance_normalises_the_stem_and_each_stages_output() -> None:
    torch.manual_seed(5)
    plain = create_model("mcgf", **TINY)
    stem_bn = plain.drone_encoder.bn1
    stem_bn.weight.data.uniform_(0.5, 1.5)
    stem_bn.bias.data.uniform_(-0.5, 0.5)
    torch.manual_seed(5)
    model = create_model("mcgf", **TINY, ibn_stages=[1, 2], ibn_mode="b").eval()
    enc = model.drone_encoder
    # Instance norms as group norms of one channel per group (the same function).
    assert isinstance(enc.bn1, torch.nn.GroupNorm) and enc.bn1.num_groups == 64
    for stage, channels in ((1, 8), (2, 16)):
        act = getattr(enc, f"layer{stage}")[-1].act2
        assert isinstance(act[0], torch.nn.GroupNorm)
        assert act[0].num_groups == act[0].num_channels == channels
    assert not isinstance(enc.layer3[-1].act2, torch.nn.Sequential)
    # A per-image gain on the input no longer reaches past the stem (the convolution has
    # no bias, the instance norm divides the gain out), unlike with the stem's BN.
    x = torch.rand(2, 3, 32, 32)
    gain = torch.tensor([0.5, 2.0]).view(2, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(enc.bn1(enc.conv1(x * gain)), enc.bn1(enc.conv1(x)),
                                   atol=1e-2, rtol=1e-2)
        plain.eval()
        moved = plain.drone_encoder.bn1(plain.drone_encoder.conv1(x * gain))
        assert (moved - plain.drone_encoder.bn1(plain.drone_encoder.conv1(x))).abs().mean() > 0.1


def test_ibn_b_norms_are_instance_norms_and_keep_a_channels_last_layout() -> None:
    model = create_model("mcgf", **TINY, ibn_stages=[1], ibn_mode="b")
    norm = model.drone_encoder.bn1
    reference = torch.nn.InstanceNorm2d(norm.num_channels, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    reference.load_state_dict(norm.state_dict())  # same parameter names
    x = torch.randn(2, norm.num_channels, 8, 8)
    torch.testing.assert_close(norm(x), reference(x), atol=1e-5, rtol=1e-4)
    assert norm(x.contiguous(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)


def test_a_channels_last_model_keeps_its_layout_through_the_ibn_layers() -> None:
    torch.manual_seed(0)
    model = create_model("mcgf", **TINY, ibn_stages=[1, 2, 3], channels_last=True)
    torch.manual_seed(0)
    reference = create_model("mcgf", **TINY, ibn_stages=[1, 2, 3])
    layer = model.drone_encoder.layer1[0].bn1
    x = torch.randn(2, 8, 8, 8)
    out = layer(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert layer(x).is_contiguous()
    torch.testing.assert_close(out, layer(x))
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(model.embed(images, "drone"), reference.embed(images, "drone"),
                               atol=1e-5, rtol=1e-4)


def test_ibn_b_normalises_a_bottleneck_resnets_block_output() -> None:
    """In a bottleneck ResNet the norm goes before the block's last activation (act3), over
    the block's output channels."""
    model = create_model("mcgf", backbone_name="resnet50", num_classes=3, img_size=32,
                         restoration=False, bottleneck_dim=16, ibn_stages=[1], ibn_mode="b",
                         backbone_args={"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]})
    block = model.drone_encoder.layer1[-1]
    assert isinstance(block.act3, torch.nn.Sequential)
    assert block.act3[0].num_channels == block.bn3.num_features == 32  # 4 × 8 channels out
    assert not isinstance(block.act2, torch.nn.Sequential)
    assert model.embed(torch.rand(2, 3, 32, 32), "drone").shape == (2, 16)

"""Muse-Net: IBN layers, the ImageNet-weight mapping, SPADE modulation by the environment,
its two cross-entropies, retrieval embeddings, checkpoints, and `mcgf train` + `mcgf
evaluate` end to end on a tiny tree."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mcgf.cli.main import main
from mcgf.models.base import check_trainable
from mcgf.models.ibn import IBN, conditioned, ibn_state_dict, to_ibn
from mcgf.models.model_registry import available_models, create_model
from mcgf.models.musenet import MuseNet
from mcgf.training import load_checkpoint, save_checkpoint
from mcgf.weather.conditions import CONDITIONS, UnknownConditionError
from tests.evaluation.conftest import tiny_u1652  # noqa: F401  (fixture)
from tests.training.tiny_run import write_config, write_tree

#: A narrow ResNet-50-style network (one bottleneck per stage) at 32 px. Its last BN of each
#: block starts at 1, not timm's 0 (which makes every new block an identity, the modulated
#: ones included, until the first step).
TINY: dict[str, Any] = {
    "backbone_name": "resnet50", "num_classes": 3, "img_size": 32,
    "backbone_args": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64],
                      "zero_init_last": False},
    "spade_blocks": ["layer1.0", "layer2.0"], "bottleneck_dim": 16,
}


def tiny(**kw: Any) -> MuseNet:
    torch.manual_seed(0)
    return create_model("musenet", **{**TINY, **kw})  # type: ignore[return-value]


def batch(seed: int = 0, conditions: tuple[str, ...] = ("fog", "normal", "rain", "dark")) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"drone": torch.randn(4, 3, 32, 32, generator=g), "drone_label": torch.tensor([0, 0, 1, 2]),
            "satellite": torch.randn(3, 3, 32, 32, generator=g),
            "satellite_label": torch.tensor([0, 1, 2]), "drone_condition": list(conditions)}


def plain_resnet() -> torch.nn.Module:
    """The tiny ResNet with BN parameters and statistics far from their initial values."""
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet50", num_classes=0, layers=[1, 1, 1, 1], channels=[8, 16, 32, 64])
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        for t in (bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var):
            t.copy_(torch.rand_like(t) + 0.5)
    return net.eval()


def test_ibn_normalises_the_in_half_per_instance_and_the_bn_half_over_the_batch() -> None:
    layer = IBN(4, ratio=0.5).train()
    x = torch.zeros(2, 4, 1, 4)
    x[0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])   # instance 0: values 1..4 in every channel
    x[1, :, 0] = torch.tensor([10.0, 30.0, 50.0, 70.0])  # instance 1: another mean and scale
    out = layer(x)
    # IN half: each (instance, channel) row standardised on its own (biased variance).
    ramp = torch.tensor([-3.0, -1.0, 1.0, 3.0]) / math.sqrt(5.0)
    for n in range(2):
        for c in range(2):
            torch.testing.assert_close(out[n, c, 0], ramp, atol=1e-4, rtol=0)
    # BN half: standardised over batch and positions together, so the instances keep
    # their difference (instance 0 is far below the joint mean).
    joint = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 30.0, 50.0, 70.0])
    expect = (x[:, 2:] - joint.mean()) / torch.sqrt(joint.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(out[:, 2:], expect)
    torch.testing.assert_close(out[:, 2:].mean(dim=(1, 2, 3)), torch.tensor([-0.7641, 0.7641]),
                               atol=1e-4, rtol=0)
    # Eval: BN uses its running statistics, IN still the instance's own.
    layer.BN.running_mean.fill_(2.0)
    layer.BN.running_var.fill_(4.0)
    out = layer.eval()(x)
    torch.testing.assert_close(out[0, 2, 0], (x[0, 2, 0] - 2.0) / math.sqrt(4.0 + 1e-5))
    torch.testing.assert_close(out[1, 0, 0], ramp, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="no IN or no BN"):
        IBN(1)


def test_plain_resnet_weights_map_onto_the_ibn_layers() -> None:
    plain = plain_resnet()
    state = plain.state_dict()
    net = plain_resnet()
    assert to_ibn(net, [1, 2, 3]) == ["layer1.0.bn1", "layer2.0.bn1", "layer3.0.bn1"]
    net.load_state_dict(ibn_state_dict(state, net))  # strict: every key has its home
    for name, width in (("layer1.0.bn1", 8), ("layer2.0.bn1", 16), ("layer3.0.bn1", 32)):
        half = width // 2
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(net.state_dict()[f"{name}.BN.{key}"], state[f"{name}.{key}"][half:])
        assert torch.equal(net.get_submodule(name).IN.weight, torch.ones(half))
        assert torch.equal(net.get_submodule(name).IN.bias, torch.zeros(half))
    assert torch.equal(net.layer4[0].bn1.weight, state["layer4.0.bn1.weight"])  # stage 4: BN
    # The BN half computes exactly what the plain network's bn1 gave those channels.
    seen: dict[str, torch.Tensor] = {}
    plain.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.setdefault("plain", o))
    net.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.setdefault("ibn", o))
    x = torch.randn(2, 3, 32, 32)
    plain(x), net.eval()(x)
    torch.testing.assert_close(seen["ibn"][:, 4:], seen["plain"][:, 4:])
    assert not torch.allclose(seen["ibn"][:, :4], seen["plain"][:, :4])


def test_pretrained_and_weights_files_reach_the_ibn_backbone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcgf.models.backbone as backbone

    state = plain_resnet().state_dict()
    real = backbone.create_backbone
    asked: list[bool] = []

    def cached_imagenet(name: str, **kw: Any) -> backbone.Backbone:
        """create_backbone with the tiny network's weights standing in for the cache."""
        asked.append(bool(kw.get("pretrained")))
        built = real(name, **{**kw, "pretrained": False})
        if kw.get("pretrained"):
            built.model.load_state_dict(state)
        return built

    monkeypatch.setattr(backbone, "create_backbone", cached_imagenet)
    monkeypatch.setattr("mcgf.models.musenet.create_backbone", cached_imagenet)
    model = tiny(pretrained=True)
    assert asked == [True, True]  # the IBN backbone and the environment branch
    got = model.backbone.state_dict()
    assert torch.equal(got["layer2.0.bn1.BN.running_var"], state["layer2.0.bn1.running_var"][8:])
    assert torch.equal(got["conv1.weight"], state["conv1.weight"])
    assert torch.equal(model.environment[0].weight, state["conv1.weight"])
    # The same mapping from a weights file (plain keys, with a DataParallel prefix) ...
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, tmp_path / "r.safetensors")
    from_file = tiny(weights=str(tmp_path / "r.safetensors")).backbone.state_dict()
    assert torch.equal(from_file["layer3.0.bn1.BN.weight"], state["layer3.0.bn1.weight"][16:])
    assert torch.equal(from_file["layer3.0.bn1.IN.weight"], torch.ones(16))
    # ... and IBN-a weights (IN/BN keys) load as they are.
    ibn = {k: v + 1 for k, v in got.items() if v.is_floating_point()}
    save_file({k: v.contiguous() for k, v in ibn.items()}, tmp_path / "ibn.safetensors")
    again = tiny(weights=str(tmp_path / "ibn.safetensors")).backbone.state_dict()
    assert torch.equal(again["layer1.0.bn1.IN.bias"], ibn["layer1.0.bn1.IN.bias"])


@pytest.mark.parametrize("prefix", ["model.backbone.", "module.model.encoder.", "backbone."])
def test_wrapped_weights_reach_the_ibn_backbone_as_a_plain_backbone_s(tmp_path: Path, prefix: str) -> None:
    """The wrapper prefixes other models' weights files lose (a Lightning module's
    ``model.backbone.`` under DDP's ``module.``) are taken off for MuseNet too."""
    state = plain_resnet().state_dict()
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}, "epoch": 3}, tmp_path / "w.ckpt")
    got = tiny(weights=str(tmp_path / "w.ckpt")).backbone.state_dict()
    assert torch.equal(got["conv1.weight"], state["conv1.weight"])
    assert torch.equal(got["layer2.0.bn1.BN.running_var"], state["layer2.0.bn1.running_var"][8:])
    assert torch.equal(got["layer4.0.conv2.weight"], state["layer4.0.conv2.weight"])


def test_weights_of_another_architecture_are_refused_unless_partial_is_allowed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import timm

    from mcgf.errors import UserError

    # Two bottlenecks in layer1: a superset of the tiny network's keys, but layer2..4 wider.
    other = timm.create_model("resnet50", num_classes=0, layers=[2, 1, 1, 1], channels=[8, 16, 32, 128])
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "o.safetensors")
    with pytest.raises(UserError, match=r"leaves \d+ of \d+ tensors .*allow_partial_weights"):
        tiny(weights=str(tmp_path / "o.safetensors"))
    model = tiny(weights=str(tmp_path / "o.safetensors"), allow_partial_weights=True)
    assert "left unset" in caplog.text
    got = model.backbone.state_dict()
    assert torch.equal(got["layer1.0.conv1.weight"], other.state_dict()["layer1.0.conv1.weight"])


def test_spade_modulates_the_in_half_from_the_environment() -> None:
    model = tiny().eval()
    for layer in model.modulated:  # stronger than the 0.001 init, so the effect is plain
        assert layer.spade is not None
        for conv in (layer.spade.gamma, layer.spade.beta):
            torch.nn.init.normal_(conv.weight, std=0.05)
    x, y = torch.randn(2, 3, 32, 32), 3 * torch.randn(2, 3, 32, 32) + 1
    with torch.no_grad():
        env_x, env_y = model.environment(x), model.environment(y)
        with conditioned(model.modulated, env_x):
            own = model.backbone(x)
        with conditioned(model.modulated, env_y):
            other = model.backbone(x)
        plain = model.backbone(x)  # no map set: plain IBN-a
        assert torch.equal(own, model.encode(x)[0])  # encode uses the image's own map
        assert (own - other).abs().max() > 1e-3 and (own - plain).abs().max() > 1e-3
        # The formula at the layer: IN(x) · (1 + γ) + β on the IN half, BN half untouched.
        layer = model.modulated[0]
        h = torch.randn(2, 8, 8, 8)
        with conditioned([layer], env_y):
            out = layer(h)
        gamma, beta = layer.spade(env_y, (8, 8))  # type: ignore[misc]
        torch.testing.assert_close(out[:, :4], layer.IN(h[:, :4]) * (1 + gamma) + beta)
        torch.testing.assert_close(out[:, 4:], layer.BN(h[:, 4:]))
    assert all(layer.condition is None for layer in model.modulated)  # cleared after use


def test_loss_terms_weights_and_backward() -> None:
    model = tiny(env_weight=0.5)
    check_trainable(model, "musenet")
    assert "musenet" in available_models() and model.loss_weights == {"ce": 1.0, "env": 0.5}
    assert model.needs_clean_targets is False
    terms = model.loss(batch())
    assert set(terms) == {"ce", "env", "total"}
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    torch.testing.assert_close(terms["total"], terms["ce"] + 0.5 * terms["env"])
    terms["total"].backward()
    for part in (model.backbone.conv1, model.environment[0], model.env_head[2], model.head,
                 model.modulated[0].spade):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
    # The environment term is the drone conditions' CE plus the tiles' CE. As in the source,
    # the classifier has 11 classes: 0 for satellite tiles, 1 + i for drone images under
    # CONDITIONS[i], so a clean drone image ("normal", 1) is not a tile (0).
    model.eval()
    b = batch(conditions=("wind", "normal", "fog_snow", "light"))
    with torch.no_grad():
        out, env = model(b), model.loss(b)["env"]
    assert out["drone_env_logits"].shape == (4, 11) and out["satellite_env_logits"].shape == (3, 11)
    want = [10, 1, 8, 6]
    assert want == [1 + CONDITIONS.index(c) for c in b["drone_condition"]]
    expect = (F.cross_entropy(out["drone_env_logits"], torch.tensor(want))
              + F.cross_entropy(out["satellite_env_logits"], torch.zeros(3, dtype=torch.long)))
    torch.testing.assert_close(env, expect)
    no_tiles = tiny(env_satellite=False).eval()
    with torch.no_grad():
        only_drone = no_tiles.loss(b)["env"]
        torch.testing.assert_close(only_drone, F.cross_entropy(
            no_tiles(b)["drone_env_logits"], torch.tensor(want)))
    assert "env" not in tiny(env_weight=0.0).loss(b)
    with pytest.raises(UnknownConditionError, match="drone_condition"):
        model.loss(batch(conditions=("fog", "hail", "rain", "dark")))


def test_param_groups_scale_the_resnets_and_cover_every_parameter_once() -> None:
    model = tiny(backbone_lr_scale=0.1)
    groups = model.param_groups(1e-3, 0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    enc = {id(p) for p in model.encoder_parameters()}
    spade = {id(p) for p in model.modulated[0].spade.parameters()}  # type: ignore[union-attr]
    assert enc.isdisjoint(spade) and id(model.environment[0].weight) in enc
    for g in groups:
        resnet = all(id(p) in enc for p in g["params"])
        assert g["lr"] == pytest.approx(1e-4 if resnet else 1e-3)


def test_embed_is_unit_length_and_view_independent() -> None:
    model = tiny().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        emb = model.embed(x, "drone")
        assert emb.shape == (3, 16)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
        assert torch.equal(emb, model.embed(x, "satellite"))
    with pytest.raises(ValueError, match="view"):
        model.embed(x, "street")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny().eval()
    model.loss(batch())  # BN statistics move away from their initial values
    model.eval()
    save_checkpoint(tmp_path / "ck", model, {"name": "musenet", **TINY})
    loaded = load_checkpoint(tmp_path / "ck").model
    assert isinstance(loaded, MuseNet)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x, "drone"), model.embed(x, "drone"))


def test_bad_blocks_are_one_line_errors() -> None:
    from mcgf.errors import UserError

    with pytest.raises(UserError, match=r"model.spade_blocks: layer1.2 is not a block"):
        tiny(spade_blocks=["layer1.2"])
    with pytest.raises(UserError, match=r"model.spade_blocks must be blocks of the ibn_stages"):
        tiny(ibn_stages=[1, 2], spade_blocks=["layer3.0"])
    with pytest.raises(UserError, match=r"model.backbone_name must be a timm ResNet"):
        create_model("musenet", backbone_name="vit_tiny_patch16_224", num_classes=3)


def test_mcgf_train_then_evaluate(tiny_u1652: Path, tmp_path: Path,  # noqa: F811
                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tiny_u1652, locations=4, drones=2, size=24)
    cfg = {
        "data": {"root": str(tiny_u1652), "locations_per_batch": 2, "drones_per_location": 2,
                 "workers": 0},
        "weather": {"conditions": ["fog", "rain", "dark"], "seed": 1, "clean_fraction": 0.3},
        "model": {"name": "musenet", **{k: v for k, v in TINY.items() if k != "num_classes"},
                  "backbone_lr_scale": 1.0, "dropout": 0.1},
        "train": {"epochs": 2, "seed": 0, "lr": 1e-3, "warmup_steps": 1, "device": "cpu",
                  "log_every": 1},
    }
    out = tmp_path / "run"
    config = write_config(tmp_path / "musenet.yaml", cfg)
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"ce", "env", "total", "grad_encoder_env"} <= set(header)
    assert json.loads((out / "last" / "config.json").read_text())["model"]["name"] == "musenet"
    ev = tmp_path / "ev"
    assert main(["evaluate", str(tiny_u1652), "--checkpoint", str(out / "last"), "--out", str(ev),
                 "--weather", "normal,fog", "--workers", "0", "--quiet", "--device", "cpu"]) == 0
    report = json.loads((ev / "metrics.json").read_text())
    d2s = [r["metrics"] for r in report["results"] if r["direction"] == "drone->satellite"]
    assert len(d2s) == 2 and all(0 <= m["R@1"] <= 100 and m["num_queries"] == 15 for m in d2s)
    capsys.readouterr()

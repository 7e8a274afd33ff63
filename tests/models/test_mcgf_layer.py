"""The MCGF model layer: backbone, head, losses, restoration branch, full model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcgf.errors import UserError
from mcgf.models.backbone import create_backbone, encode, layer_decay_param_groups
from mcgf.models.heads import ClassBlock
from mcgf.models.losses import InfoNCE, cross_entropy_views, ddpm_epsilon_loss
from mcgf.models.mcgf_model import MCGFModel
from mcgf.models.model_registry import available_models, create_model
from mcgf.models.params import count_parameters
from mcgf.models.restoration import RestorationBranch

VIT = "vit_tiny_patch16_224"
SMALL_BRANCH = {"restoration_width": 16, "restoration_mults": (1, 2), "restoration_blocks": 1}


def tiny_model(**kw: object) -> MCGFModel:
    torch.manual_seed(0)
    opts = {"img_size": 32, "bottleneck_dim": 32, "dropout": 0.0, **SMALL_BRANCH, **kw}
    return MCGFModel(VIT, 4, **opts)  # type: ignore[arg-type]


def tiny_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "drone": torch.randn(4, 3, 32, 32, generator=g),
        "drone_clean": torch.randn(4, 3, 32, 32, generator=g),
        "drone_label": torch.tensor([0, 0, 1, 2]),
        "satellite": torch.randn(3, 3, 32, 32, generator=g),
        "satellite_label": torch.tensor([0, 1, 2]),
    }


# --- backbone ---------------------------------------------------------------------------


def test_vit_feature_map_drops_prefix_tokens_and_pools_like_forward() -> None:
    bb = create_backbone(VIT, img_size=64)
    bb.model.eval()
    x = torch.randn(2, 3, 64, 64)
    pooled, fmap = encode(bb.model, x)
    assert bb.dim == 192
    assert fmap.shape == (2, 192, 4, 4)
    tokens = bb.model.forward_features(x)
    assert torch.allclose(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # row-major after cls
    assert torch.allclose(pooled, bb.model(x), atol=1e-6)


def test_cnn_feature_map_is_its_nchw_map() -> None:
    bb = create_backbone("resnet18")
    pooled, fmap = encode(bb.model.eval(), torch.randn(2, 3, 32, 32))
    assert (bb.dim, pooled.shape, fmap.shape) == (512, (2, 512), (2, 512, 1, 1))


def test_weights_from_safetensors_give_identical_outputs(tmp_path) -> None:
    from safetensors.torch import save_file

    src = create_backbone(VIT, img_size=32).model.eval()
    path = tmp_path / "w.safetensors"
    # Saved with a wrapper prefix: loading must strip it.
    save_file({f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different random init that the file must overwrite
    bb = create_backbone(VIT, img_size=32, weights=path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(bb.model.eval()(x), src(x))
    assert bb.load_report is not None and not bb.load_report.missing


def test_weights_from_pth_report_missing_keys(tmp_path) -> None:
    src = create_backbone(VIT, img_size=32).model
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("norm.")}
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    report = create_backbone(VIT, img_size=32, weights=tmp_path / "w.pth",
                             allow_partial=True).load_report
    assert report is not None
    assert sorted(report.missing) == ["norm.bias", "norm.weight"]
    assert report.loaded == len(state)


def test_weights_matching_nothing_or_missing_are_user_errors(tmp_path) -> None:
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="matches no parameter"):
        create_backbone(VIT, img_size=32, weights=tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        create_backbone(VIT, img_size=32, weights=tmp_path / "nope.safetensors")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(UserError, match="unsupported extension"):
        create_backbone(VIT, img_size=32, weights=tmp_path / "w.txt")


def test_pretrained_without_cache_is_a_user_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(UserError, match=r"model\.weights=PATH"):
        create_backbone(VIT, img_size=32, pretrained=True)


def test_unknown_backbone_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown backbone"):
        create_backbone("no_such_net_v9")


@pytest.mark.parametrize(("name", "args"), [
    (VIT, {"depth": 1, "dynamic_img_size": True}),
    ("vit_small_patch14_reg4_dinov2", {"depth": 1, "embed_dim": 32, "num_heads": 1,
                                       "dynamic_img_size": True}),
    ("eva02_tiny_patch14_224", {"depth": 1, "dynamic_img_size": True}),
])
def test_an_img_size_a_dynamic_patch_embedding_rejects_is_named(name: str, args: dict) -> None:
    """Built fine by timm, such a model failed its first batch with an AssertionError."""
    patch = 16 if name == VIT else 14
    with pytest.raises(UserError, match=rf"model\.img_size 40 is not a multiple of the patch "
                       rf"size {patch} of backbone '{name}'.*dynamic_img_pad: true"):
        create_model("sample4geo", backbone_name=name, img_size=40, backbone_args=args)
    with pytest.raises(UserError, match=rf"model\.img_size 8 is smaller than the patch size {patch}"):
        create_backbone(name, img_size=8, model_args={"depth": 1})
    for size, extra in ((2 * patch, {}), (40, {"dynamic_img_pad": True})):
        model = create_model("sample4geo", backbone_name=name, img_size=size,
                             backbone_args={**args, **extra}).eval()
        with torch.no_grad():
            assert model.embed(torch.randn(1, 3, size, size), "drone").shape[0] == 1


@pytest.mark.parametrize("method", ["mcgf", "lpn", "sample4geo", "musenet"])
def test_a_pretrained_tag_timm_lacks_is_a_user_error(method: str) -> None:
    """timm.create_model refuses a tag it does not know even without pretrained weights
    (a RuntimeError): the option check names it first."""
    with pytest.raises(UserError, match=r"model\.backbone_name must be .*resnet18\.no_such_tag"):
        create_model(method, backbone_name="resnet18.no_such_tag", img_size=32)
    with pytest.raises(UserError, match=r"no pretrained tag 'no_such_tag' for resnet18"):
        create_backbone("resnet18.no_such_tag", img_size=32)
    create_backbone("resnet18.a1_in1k", img_size=32)  # a tag timm has is fine


def test_layer_decay_groups_scale_lr_by_depth() -> None:
    model = create_backbone(VIT, img_size=32).model
    groups = layer_decay_param_groups(model, base_lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    first, last = model.blocks[0].mlp.fc1.weight, model.blocks[-1].mlp.fc1.weight
    assert lr_of[id(model.norm.weight)] == pytest.approx(1e-3)
    assert lr_of[id(first)] == pytest.approx(lr_of[id(last)] * 0.5 ** (len(model.blocks) - 1))
    assert lr_of[id(model.patch_embed.proj.weight)] == pytest.approx(lr_of[id(first)] * 0.5)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("name, args, top", [
    ("eva02_tiny_patch14_224", {"depth": 3}, "fc_norm"),  # EVA-02: average pool + fc_norm
    ("convnext_atto", {}, "head.norm"),
    (VIT, {"depth": 3, "global_pool": "avg"}, "fc_norm"),
])
def test_layer_decay_trains_the_top_block_at_base_lr_beside_a_final_norm(
        name: str, args: dict, top: str) -> None:
    """A pooled encoder's final norm (which timm's group matcher leaves unnamed, so timm
    puts it in a layer of its own above the blocks) trains with the top block at
    ``base_lr``; each layer below at ``layer_decay`` times the one above."""
    model = create_backbone(name, img_size=28 if "patch14" in name else 32,
                            model_args=args).model
    groups = layer_decay_param_groups(model, base_lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    lr_of = {n: g["lr"] for g in groups for p in g["params"]
             for n, q in model.named_parameters() if q is p}
    last = [n for n, _ in model.named_parameters() if n.startswith(("blocks.", "stages."))][-1]
    assert lr_of[f"{top}.weight"] == pytest.approx(1e-3)
    assert lr_of[last] == pytest.approx(1e-3)
    assert sorted(set(lr_of.values()))[-2] == pytest.approx(0.5e-3)
    assert all(g["lr"] == pytest.approx(1e-3 * g["lr_scale"]) for g in groups)


def test_grad_checkpointing_keeps_outputs() -> None:
    torch.manual_seed(0)
    a = create_backbone(VIT, img_size=32).model
    b = create_backbone(VIT, img_size=32, grad_checkpointing=True).model
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert b.grad_checkpointing
    assert torch.allclose(a.train()(x), b.train()(x), atol=1e-5)


# --- head and losses ---------------------------------------------------------------------


def test_class_block_shapes_and_normalised_embedding() -> None:
    head = ClassBlock(16, 5, bottleneck=8).eval()
    emb, logits = head(torch.randn(3, 16))
    assert emb.shape == (3, 8) and logits.shape == (3, 5)
    e = head.embed(torch.randn(3, 16))
    assert torch.allclose(e.norm(dim=1), torch.ones(3))


def test_cross_entropy_views_is_sum_of_hand_computed_terms() -> None:
    ld = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    ls = torch.tensor([[0.0, 0.0]])
    want_d = 0.5 * (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (1 + math.e)))
    want = want_d + math.log(2.0)
    got = cross_entropy_views(ld, torch.tensor([0, 1]), ls, torch.tensor([1]))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_infonce_matches_hand_computation_with_two_drone_views() -> None:
    loss_fn = InfoNCE()
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ld, ls = torch.tensor([0, 1, 0]), torch.tensor([0, 1])
    scale = 1 / 0.07
    sim = scale * F.normalize(d, dim=1) @ F.normalize(s, dim=1).T
    d2s = torch.stack([-torch.log_softmax(sim[i], 0)[ls.tolist().index(int(ld[i]))] for i in range(3)])
    s2d = []
    for j in range(2):
        p = torch.softmax(sim[:, j], 0)
        s2d.append(-torch.log(p[ld == ls[j]].sum()))
    want = 0.5 * (d2s.mean() + torch.stack(s2d).mean())
    got = loss_fn(d, ld, s, ls)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # Symmetric: swapping the roles of the views gives the same value.
    assert loss_fn(s, ls, d, ld).item() == pytest.approx(got.item(), rel=1e-6)


def test_infonce_temperature_is_learnable_and_clamped() -> None:
    loss_fn = InfoNCE()
    assert loss_fn.scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    d, s = torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.arange(4)
    loss_fn(d, labels, s, labels).backward()
    assert loss_fn.log_scale.grad is not None and loss_fn.log_scale.grad.abs() > 0
    with torch.no_grad():
        loss_fn.log_scale.fill_(10.0)
    assert loss_fn.scale.item() == pytest.approx(100.0, rel=1e-5)


def test_infonce_without_any_pair_raises() -> None:
    with pytest.raises(ValueError, match="no anchor"):
        InfoNCE()(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(1, 4), torch.tensor([5]))


def test_ddpm_epsilon_loss_is_mse() -> None:
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    assert ddpm_epsilon_loss(a, b).item() == pytest.approx(2.5)


# --- restoration --------------------------------------------------------------------------


def test_restoration_branch_fits_budget_at_paper_scale() -> None:
    branch = RestorationBranch(1024)  # EVA-02-L feature width, default denoiser
    assert count_parameters(branch) <= 30_000_000


@pytest.mark.parametrize("condition", ["features", "features+image"])
def test_ddim_restore_shape_and_determinism(condition: str) -> None:
    torch.manual_seed(0)
    branch = RestorationBranch(8, condition=condition, width=16, mults=(1, 2), num_res_blocks=1)
    torch.nn.init.normal_(branch.denoiser.conv_out.weight, std=0.1)  # non-trivial ε
    weathered, feats = torch.rand(2, 3, 18, 22) * 2 - 1, torch.randn(2, 8, 2, 2)
    kw = {"weathered": weathered} if condition == "features+image" else {"size": (18, 22)}

    def run(seed: int) -> torch.Tensor:
        return branch.restore(feats, steps=5, generator=torch.Generator().manual_seed(seed), **kw)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (2, 3, 18, 22)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


# --- full model ---------------------------------------------------------------------------


def test_forward_shapes_and_restoration_loss() -> None:
    model = tiny_model()
    out = model(tiny_batch())
    assert out["drone_embedding"].shape == (4, 32) and out["drone_logits"].shape == (4, 4)
    assert out["satellite_embedding"].shape == (3, 32) and out["satellite_logits"].shape == (3, 4)
    assert out["restoration_loss"].ndim == 0 and out["restoration_loss"] > 0
    batch = tiny_batch()
    del batch["drone_clean"]
    assert "restoration_loss" not in model(batch)


def test_restoration_loss_reaches_shared_encoder() -> None:
    model = tiny_model()
    assert model.restoration is not None
    # The output conv starts at zero (ε = 0), which blocks gradients until the first
    # update; give it the weights a trained branch would have.
    torch.nn.init.normal_(model.restoration.denoiser.conv_out.weight, std=0.1)
    model(tiny_batch())["restoration_loss"].backward()
    grads = [p.grad for p in model.drone_encoder.blocks[0].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.head.parameters())


def test_embed_never_runs_the_restoration_branch(monkeypatch) -> None:
    model = tiny_model().eval()

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("restoration branch ran during embed")

    assert model.restoration is not None
    monkeypatch.setattr(model.restoration.denoiser, "forward", boom)
    emb = model.embed(torch.randn(2, 3, 32, 32), "drone")
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_unshared_encoders_are_separate_modules() -> None:
    model = tiny_model(share_encoder=False, restoration=False)
    assert model.satellite_encoder is not model.drone_encoder
    assert model.restoration is None
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model.satellite_encoder.blocks[0].mlp.fc1.weight.add_(1.0)
    assert not torch.allclose(model.embed(x, "drone"), model.embed(x, "satellite"))


def test_loss_decreases_on_tiny_overfit_batch() -> None:
    model = tiny_model(lambda_restore=1.0, infonce=0.5)
    batch = tiny_batch()
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3, weight_decay=0.0))
    first = None
    for step in range(8):
        terms = model.loss(batch, generator=torch.Generator().manual_seed(step % 2))
        if first is None:
            first = {k: v.item() for k, v in terms.items()}
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    assert set(first) == {"ce", "infonce", "restore", "total"}
    last = model.loss(batch, generator=torch.Generator().manual_seed(0))
    assert last["ce"].item() < first["ce"]
    assert last["total"].item() < first["total"]


def test_model_restore_returns_unit_range_images() -> None:
    model = tiny_model(restore_size=16).eval()
    out = model.restore(torch.randn(2, 3, 32, 32), steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and out.min() >= 0 and out.max() <= 1


def test_registry_builds_by_name_and_rejects_bad_options() -> None:
    assert "mcgf" in available_models()
    model = create_model("mcgf", backbone_name="resnet18", num_classes=3, restoration=False)
    assert isinstance(model, MCGFModel)
    with pytest.raises(UserError, match=r"unknown model .*mcgf --import MODULE"):
        create_model("nope")
    with pytest.raises(UserError, match="bad options"):
        create_model("mcgf", backbone_name="resnet18", num_classes=3, wings=2)


def test_model_consumes_the_data_layer_batches(tmp_path) -> None:
    """A batch from CrossViewTrainSet + collate_cross_view feeds MCGFModel.loss as is."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import functional as TF

    from mcgf.data.datasets import CrossViewTrainSet, collate_cross_view
    from mcgf.data.layout import read_class_folders

    rng = np.random.default_rng(0)
    for cls in ("0001", "0002"):
        for view, n in (("drone", 2), ("satellite", 1)):
            d = tmp_path / view / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")

    def tf(im):
        return TF.to_tensor(im)

    ds = CrossViewTrainSet(
        read_class_folders(tmp_path / "drone", "drone"), read_class_folders(tmp_path / "satellite", "satellite"),
        drone_transform=tf, satellite_transform=tf, return_clean=True,
        degrade=lambda arr, key: ((arr * 0.5).astype(np.uint8), "dark"),
    )
    batch = collate_cross_view([ds[i] for i in range(len(ds))])
    model = create_model("mcgf", backbone_name="vit_tiny_patch16_224", num_classes=ds.num_classes,
                         img_size=32, restoration_width=8, lambda_restore=1.0)
    losses = model.loss(batch)
    assert torch.isfinite(losses["total"]) and losses["restore"] > 0


def test_restoration_uses_only_the_weathered_drone_images() -> None:
    model = tiny_model().eval()  # eval: the head's BatchNorm takes a single image below
    batch = tiny_batch()
    n = batch["drone"].shape[0]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # All clean: no restoration term at all.
    out = model(dict(batch, drone_condition=["normal"] * n), generator=gen())
    assert "restoration_loss" not in out
    # Some weathered: the term equals the branch's loss on exactly those images.
    conds = ["fog"] + ["normal"] * (n - 1)
    got = model(dict(batch, drone_condition=conds), generator=gen())["restoration_loss"]
    sub = {k: (v[:1] if k in ("drone", "drone_clean", "drone_label") else v) for k, v in batch.items()}
    want = model(sub, generator=gen())["restoration_loss"]
    assert torch.allclose(got, want, atol=1e-6)
    # Unknown conditions: every image is used (as before).
    assert "restoration_loss" in model(batch, generator=gen())


def test_image_input_norm_ignores_global_brightness_and_contrast() -> None:
    x = tiny_batch()["drone"]
    darker = x * 0.4 - 0.3  # what 'dark' and 'light' do to the normalised image, before clipping
    normed = tiny_model(input_norm="image").eval()
    plain = tiny_model().eval()
    with torch.no_grad():
        assert torch.allclose(normed.embed(darker, "drone"), normed.embed(x, "drone"), atol=1e-3)
        assert not torch.allclose(plain.embed(darker, "drone"), plain.embed(x, "drone"), atol=1e-2)
    with pytest.raises(ValueError, match="input_norm"):
        tiny_model(input_norm="channel")

"""AdamW groups: no weight decay on position embeddings, class tokens and 1-D parameters."""

from __future__ import annotations

import pytest
from torch import nn

from mcgf.models.base import TrainableMixin, decay_split, no_weight_decay_ids
from mcgf.models.mcgf_model import MCGFModel

EVA_ARGS = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2, "ref_feat_shape": [4, 4]}
BACKBONES = {
    "vit": ("vit_tiny_patch16_224", {}),
    "eva02": ("eva02_tiny_patch14_224", {"backbone_args": EVA_ARGS}),
}


def tiny(kind: str) -> MCGFModel:
    name, opts = BACKBONES[kind]
    return MCGFModel(name, num_classes=3, img_size=32, bottleneck_dim=16, restoration_width=8,
                     restoration_mults=(1,), restoration_blocks=1, **opts)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("layer_decay", [None, 0.75])
def test_tokens_embeddings_and_vectors_get_no_weight_decay(kind: str, layer_decay: float | None) -> None:
    model = tiny(kind)
    groups = model.param_groups(1e-3, 0.05, layer_decay)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(decay)  # each parameter once
    assert set(decay) == {id(p) for p in model.parameters() if p.requires_grad}
    enc = model.drone_encoder
    assert enc.pos_embed.ndim == 3 and enc.cls_token.ndim == 3
    assert decay[id(enc.pos_embed)] == 0.0 and decay[id(enc.cls_token)] == 0.0
    for name, p in model.named_parameters():
        if p.ndim <= 1:
            assert decay[id(p)] == 0.0, name
        elif name not in ("drone_encoder.pos_embed", "drone_encoder.cls_token"):
            assert decay[id(p)] == 0.05, name  # weight matrices and kernels keep it
    assert all(decay[id(w)] == 0.05 for w in (enc.patch_embed.proj.weight,
                                              enc.blocks[0].attn.proj.weight,
                                              model.head.bottleneck.weight))


def test_no_weight_decay_is_found_at_any_depth() -> None:
    class Wrapper(TrainableMixin, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny("vit").drone_encoder
            self.proj = nn.Linear(4, 4)

    model = Wrapper()
    ids = no_weight_decay_ids(model)
    assert ids == {id(model.inner.pos_embed), id(model.inner.cls_token)}
    groups = model.param_groups(1e-3, 0.1)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert ids < no_decay and id(model.proj.weight) not in no_decay
    # Without the list, only vectors are spared (the former behaviour).
    plain = decay_split(model.parameters(), 1e-3, 0.1)
    assert id(model.inner.pos_embed) in {id(p) for p in plain[0]["params"]}


@pytest.mark.parametrize("layer_decay", [None, 0.75])
def test_lpn_on_a_vit_spares_position_embedding_and_class_token(layer_decay: float | None) -> None:
    from mcgf.models.model_registry import create_model

    model = create_model("lpn", num_classes=3, backbone_name="vit_tiny_patch16_224", img_size=32,
                         backbone_args={"depth": 1}, last_stride=2, blocks=1, bottleneck_dim=8)
    groups = model.param_groups(1e-3, 0.05, layer_decay)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert set(decay) == {id(p) for p in model.parameters() if p.requires_grad}
    enc = model.encoder
    assert decay[id(enc.pos_embed)] == 0.0 and decay[id(enc.cls_token)] == 0.0
    assert decay[id(enc.blocks[0].attn.qkv.weight)] == 0.05

"""Initial weights of a backbone: timm's pretrained weights through the Hugging Face cache
(found there, downloaded into it when online, a one-line error offline), the load report,
and partial weights refused unless ``allow_partial_weights``. No test reaches the network:
the hub cache is written by the tests and the download function is replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from mcgf.errors import UserError
from mcgf.models.backbone import create_backbone, pretrained_file
from mcgf.models.model_registry import create_model

#: A tiny timm ViT (0.3 M parameters) whose pretrained config points at the hub.
NAME = "test_vit.r160_in1k"
REPO = "timm/test_vit.r160_in1k"
REV = "0123456789abcdef0123456789abcdef01234567"
SRC = Path(__file__).resolve().parents[2] / "src"


def pretrained_state(seed: int = 7) -> dict[str, torch.Tensor]:
    """A state dict in the layout of the hub's file: 160 px position embeddings and the
    1000-class head the backbone (``num_classes=0``) has no place for."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(NAME, pretrained=False)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def write_hub_file(hub: Path, state: dict[str, torch.Tensor], repo: str = REPO,
                   filename: str = "model.safetensors") -> Path:
    """``state`` as ``filename`` of ``repo`` in a Hugging Face hub cache at ``hub``:
    ``models--org--name/snapshots/<rev>/<file>`` and ``refs/main``."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / REV
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REV)
    path = snap / filename
    if filename.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty ``HF_HOME`` (hub cache ``HF_HOME/hub``) and torch hub folder, online."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub read the variables at import: set what it derives from them.
    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(home))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    yield home


def no_download(*args: Any, **kwargs: Any) -> str:
    raise AssertionError(f"unexpected download {args} {kwargs}")


# --- the Hugging Face cache ----------------------------------------------------------------


def test_pretrained_weights_are_read_from_the_hub_cache(hf_home: Path, monkeypatch) -> None:
    state = pretrained_state()
    write_hub_file(hf_home / "hub", state)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    torch.manual_seed(123)  # a random init the file must overwrite
    bb = create_backbone(NAME, pretrained=True)
    own = bb.model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    report = bb.load_report
    assert report is not None and report.origin == f"hf-hub:{REPO}"
    assert report.loaded == len(own) and report.missing == []
    assert sorted(report.unexpected) == ["head.bias", "head.weight"]


def test_img_size_resizes_position_embeddings_and_says_so(hf_home: Path, monkeypatch) -> None:
    state = pretrained_state()
    write_hub_file(hf_home / "hub", state)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = create_backbone(NAME, pretrained=True, img_size=32)
    assert bb.model.pos_embed.shape == (1, 1 + 2 * 2, 64)
    assert torch.equal(bb.model.pos_embed[:, 0], state["pos_embed"][:, 0])  # class token kept
    assert torch.equal(bb.model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert bb.load_report is not None
    d = bb.load_report.as_dict()
    assert (d["matched"], d["missing"], d["unexpected"], d["resized"]) == (len(bb.model.state_dict()), 0, 2, 1)
    assert d["first_resized"] == ["pos_embed"]
    assert json.loads(json.dumps(d)) == d
    assert bb.load_report.summary().endswith(
        f"{d['matched']} tensors matched, 0 missing, 2 unexpected (head.bias, head.weight), "
        "1 resized (pos_embed)")


def test_hf_home_is_honoured_by_a_fresh_process(tmp_path: Path) -> None:
    """Nothing patched: the variables alone, as a user sets them."""
    state = pretrained_state()
    write_hub_file(tmp_path / "home" / "hub", state)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    code = ("import torch; from mcgf.models.backbone import create_backbone; "
            f"m = create_backbone({NAME!r}, pretrained=True).model; "
            "print(float(m.patch_embed.proj.weight.double().sum()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert float(out.strip()) == float(state["patch_embed.proj.weight"].double().sum())


def test_offline_with_an_empty_cache_names_the_command(hf_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    with pytest.raises(UserError) as err:
        create_backbone(NAME, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"no pretrained weights for backbone '{NAME}' in the Hugging Face "
                          f"cache ({hf_home / 'hub'}) and HF_HUB_OFFLINE is set: ")
    assert f"run hf download {REPO} model.safetensors (or python -c \"import timm; " \
           f"timm.create_model('{NAME}', pretrained=True)\")" in msg
    assert msg.endswith("or set model.weights=PATH to a weights file")


# --- downloads -----------------------------------------------------------------------------


class FakeHub:
    """``hf_hub_download`` writing ``state`` into the cache; ``missing`` names the files
    the repository lacks."""

    def __init__(self, hub: Path, state: dict[str, torch.Tensor], missing: tuple[str, ...] = ()):
        self.hub, self.state, self.missing = hub, state, missing
        self.calls: list[tuple[str, str]] = []

    def __call__(self, repo_id: str, filename: str, **kwargs: Any) -> str:
        from huggingface_hub.utils import EntryNotFoundError

        self.calls.append((repo_id, filename))
        if filename in self.missing:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(write_hub_file(self.hub, self.state, repo_id, filename))


def test_online_and_not_cached_downloads_then_uses_the_cache(hf_home: Path, monkeypatch) -> None:
    state = pretrained_state()
    fake = FakeHub(hf_home / "hub", state)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake)
    bb = create_backbone(NAME, pretrained=True)
    assert fake.calls == [(REPO, "model.safetensors")]
    assert torch.equal(bb.model.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    create_backbone(NAME, pretrained=True)  # now cached: no second download
    assert fake.calls == [(REPO, "model.safetensors")]


def test_a_repository_without_safetensors_gives_the_bin_file(hf_home: Path, monkeypatch) -> None:
    fake = FakeHub(hf_home / "hub", pretrained_state(), missing=("model.safetensors",))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake)
    path, origin = pretrained_file(NAME)
    assert fake.calls == [(REPO, "model.safetensors"), (REPO, "pytorch_model.bin")]
    assert path.name == "pytorch_model.bin" and origin == f"hf-hub:{REPO}"


def test_an_unreachable_hub_is_the_offline_error(hf_home: Path, monkeypatch) -> None:
    from huggingface_hub.utils import LocalEntryNotFoundError

    def unreachable(*args: Any, **kwargs: Any) -> str:
        raise LocalEntryNotFoundError("cannot reach huggingface.co\nsecond line")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    with pytest.raises(UserError, match=r"and the Hugging Face Hub is unreachable \(cannot reach "
                       r"huggingface\.co second line\): on a machine with network run hf download ") as err:
        create_backbone(NAME, pretrained=True)
    assert "\n" not in str(err.value)


def test_url_weights_use_the_torch_hub_cache(hf_home: Path, monkeypatch, tmp_path: Path) -> None:
    """The few timm weights not on the hub are fetched by URL into torch's hub folder."""
    name = "legacy_seresnet18.in1k"
    calls: list[str] = []

    def download(url: str, dst: str, progress: bool = True) -> None:
        calls.append(url)
        torch.save({"w": torch.zeros(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"in the torch hub cache .* and HF_HUB_OFFLINE is set: "
                       rf"on a machine with network run python -c \"import timm; "
                       rf"timm.create_model\('{name}', pretrained=True\)\", then copy"):
        pretrained_file(name)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path, origin = pretrained_file(name)
    assert calls == [origin] and origin.startswith("https://")
    assert path.parent == tmp_path / "torch-hub" / "checkpoints" and path.is_file()
    assert pretrained_file(name) == (path, origin) and len(calls) == 1


@pytest.mark.parametrize("name", ["test_vit.nothing_here", "botnet50ts_256"])
def test_a_name_without_pretrained_weights_is_a_user_error(hf_home: Path, name: str) -> None:
    with pytest.raises(UserError, match=rf"^timm has no pretrained weights for backbone '{name}': "
                       r"use a name with a pretrained tag \(python -c \"import timm; print\("
                       rf"timm\.list_pretrained\('{name.split('.')[0]}\*'\)\)\"\), set "
                       r"model\.weights=PATH, or model\.pretrained: false$"):
        pretrained_file(name)


# --- partial weights -----------------------------------------------------------------------


def test_partial_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    state = {k: v for k, v in pretrained_state().items() if not k.startswith("blocks.1.")}
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError) as err:
        create_backbone(NAME, weights=tmp_path / "w.safetensors")
    own = create_backbone(NAME).model.state_dict()
    missing = [k for k in own if k.startswith("blocks.1.")]
    assert str(err.value) == (
        f"weights file {tmp_path / 'w.safetensors'} leaves {len(missing)} of {len(own)} tensors "
        f"of VisionTransformer unset ({', '.join(missing[:3])}, ...): pass weights of the same "
        "backbone and backbone_args, or set model.allow_partial_weights: true to accept")
    bb = create_backbone(NAME, weights=tmp_path / "w.safetensors", allow_partial=True)
    assert bb.load_report is not None and bb.load_report.missing == missing
    assert torch.equal(bb.model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("prefix", ["module.", "model.backbone.", "module.model.encoder."])
def test_nested_wrapper_prefixes_are_stripped(tmp_path: Path, prefix: str) -> None:
    """A Lightning module's backbone (``model.backbone.``) under DDP (``module.``) too."""
    state = pretrained_state()
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}, "epoch": 3},
               tmp_path / "w.ckpt")
    bb = create_backbone(NAME, weights=tmp_path / "w.ckpt")
    assert bb.load_report is not None and not bb.load_report.missing
    assert torch.equal(bb.model.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])


@pytest.mark.parametrize("method", ["lpn", "mbeg", "sample4geo"])
def test_comparison_methods_take_the_option_their_error_names(tmp_path: Path, method: str) -> None:
    """The partial-weights error says to set model.allow_partial_weights: every model that
    loads weights through create_backbone takes it."""
    state = {k: v for k, v in pretrained_state().items() if not k.startswith("blocks.1.")}
    save_file(state, str(tmp_path / "w.safetensors"))
    opts = {"backbone_name": NAME, "num_classes": 3, "weights": str(tmp_path / "w.safetensors"),
            **({"last_stride": 2} if method == "lpn" else {})}
    with pytest.raises(UserError, match=r"set model\.allow_partial_weights: true to accept"):
        create_model(method, **opts)
    model = create_model(method, **opts, allow_partial_weights=True)
    assert torch.equal(model.encoder.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])



def test_weights_of_a_deeper_variant_are_warned_about(tmp_path: Path, caplog) -> None:
    """A file with more blocks than the model (ResNet-34 weights for a ResNet-18) sets every
    tensor, so nothing is missing; its extra blocks are still named in a warning. The
    classifier head the backbone has no place for is not."""
    state = pretrained_state()
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    extra = {k.replace("blocks.1.", f"blocks.{depth}.", 1): v.clone() for k, v in state.items()
             if k.startswith("blocks.1.")}
    save_file({**state, **extra}, str(tmp_path / "w.safetensors"))
    with caplog.at_level("WARNING", logger="mcgf.models.backbone"):
        bb = create_backbone(NAME, weights=tmp_path / "w.safetensors")
    assert bb.load_report is not None and not bb.load_report.missing
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    assert f"{len(extra)} tensors in blocks that VisionTransformer lacks" in warned[0]
    assert f"blocks.{depth}." in warned[0] and "head." not in warned[0]
    caplog.clear()
    save_file(state, str(tmp_path / "plain.safetensors"))
    with caplog.at_level("WARNING", logger="mcgf.models.backbone"):
        create_backbone(NAME, weights=tmp_path / "plain.safetensors")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_weights_of_another_shape_count_as_missing(tmp_path: Path) -> None:
    state = pretrained_state()
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match=r"leaves 1 of \d+ tensors of VisionTransformer unset "
                       r"\(blocks\.0\.mlp\.fc1\.weight; 1 of them of another shape\)"):
        create_backbone(NAME, weights=tmp_path / "w.safetensors")


def test_rgb_weights_for_a_five_channel_encoder_name_the_input_norm(hf_home: Path,
                                                                     monkeypatch) -> None:
    write_hub_file(hf_home / "hub", pretrained_state())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opts = {"backbone_name": NAME, "num_classes": 3, "img_size": 32, "pretrained": True,
            "restoration": False, "bottleneck_dim": 8}
    with pytest.raises(UserError, match=r"patch_embed\.proj\.weight takes 5 input channels, the "
                       r"file's 3: model\.input_norm luma_chroma and local_chroma give the encoder 5"):
        create_model("mcgf", **opts, input_norm="local_chroma")
    assert create_model("mcgf", **opts, input_norm="local").weights_report["missing"] == 0


def test_mcgf_model_keeps_the_report_and_takes_the_option(hf_home: Path, monkeypatch) -> None:
    state = pretrained_state()
    write_hub_file(hf_home / "hub", {k: v for k, v in state.items() if k != "norm.bias"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opts = {"backbone_name": NAME, "num_classes": 3, "img_size": 32, "pretrained": True,
            "restoration": False, "bottleneck_dim": 8}
    with pytest.raises(UserError, match=r"leaves 1 of .*\(norm\.bias\).*allow_partial_weights"):
        create_model("mcgf", **opts)
    model = create_model("mcgf", **opts, allow_partial_weights=True)
    report = model.weights_report
    assert report is not None
    assert (report["missing"], report["first_missing"], report["resized"]) == (1, ["norm.bias"], 1)
    assert report["origin"] == f"hf-hub:{REPO}"
    assert create_model("mcgf", **{**opts, "pretrained": False}).weights_report is None

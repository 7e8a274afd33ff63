"""mcgf.runtime: the one place that picks devices, the precision rule and thread counts."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch

import mcgf
from mcgf import runtime
from mcgf.errors import UserError
from mcgf.runtime import (
    autocast,
    autocast_dtype,
    cpu_fallback_reason,
    default_device,
    device_line,
    grad_scaler,
    precision,
    resolve_device,
    torch_threads,
)

SRC = Path(mcgf.__file__).parent


def test_resolve_device() -> None:
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" AUTO ") == default_device()
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^train.device 'tpu!' is not a device name"):
        resolve_device("tpu!", "train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_user_error() -> None:
    assert default_device() == torch.device("cpu")
    with pytest.raises(UserError, match="--device cuda:1: no CUDA GPU is available here; use --device cpu"):
        resolve_device("cuda:1")


@pytest.fixture
def bf16_card(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Pretend a GPU whose native bf16 support is the list's first item (and record that
    emulation is never counted as support)."""
    native = [True]

    def supported(including_emulation: bool = True) -> bool:
        assert including_emulation is False
        return native[0]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    return native


def test_precision_rule(bf16_card: list[bool]) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert precision(cuda) == "bf16-autocast" and autocast_dtype(cuda) == torch.bfloat16
    assert grad_scaler(cuda) is None
    assert precision(cuda, "off") == precision(cpu) == precision(cpu, "off") == "fp32"
    assert autocast_dtype(cpu) is None and grad_scaler(cpu) is None
    bf16_card[0] = False  # e.g. a V100 or T4: fp16 autocast, and training scales the loss
    assert precision(cuda) == "fp16-autocast" and autocast_dtype(cuda) == torch.float16
    with warnings.catch_warnings():  # "CUDA is not available" on a machine without a GPU
        warnings.simplefilter("ignore", UserWarning)
        assert isinstance(grad_scaler(cuda), torch.amp.GradScaler)
    assert grad_scaler(cuda, "off") is None and precision(cuda, "off") == "fp32"


def test_device_line_names_the_card_and_precision(bf16_card: list[bool], monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA Card {i}")
    assert device_line(torch.device("cuda")) == "device: cuda:0 (NVIDIA Card 0), precision bf16"
    bf16_card[0] = False
    assert device_line(torch.device("cuda", 1), requested="cuda") == \
        "device: cuda:1 (NVIDIA Card 1), precision fp16"
    assert device_line(torch.device("cuda", 1), "off") == \
        "device: cuda:1 (NVIDIA Card 1), precision fp32"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def test_cpu_line_says_why_auto_left_the_gpu(no_cuda: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    no_cuda.setattr(runtime, "nvidia_driver_visible", lambda: False)
    assert device_line(cpu) == device_line(cpu, requested="auto") == "device: cpu, precision fp32"
    no_cuda.setattr(runtime, "nvidia_driver_visible", lambda: True)
    no_cuda.setattr(torch.version, "cuda", None)
    assert device_line(cpu, requested="auto") == (
        f"device: cpu, precision fp32 (an NVIDIA driver is present but torch {torch.__version__} "
        "is built without CUDA: install a CUDA build of torch to use the GPU)")
    assert device_line(cpu, requested="cpu") == "device: cpu, precision fp32"  # asked for
    no_cuda.setattr(torch.version, "cuda", "12.8")
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cpu_fallback_reason() == ("an NVIDIA driver is present but CUDA_VISIBLE_DEVICES='' "
                                     "hides every GPU")
    no_cuda.delenv("CUDA_VISIBLE_DEVICES")
    assert cpu_fallback_reason() == (
        f"an NVIDIA driver is present but torch {torch.__version__} (CUDA 12.8) cannot use it: "
        "the driver may be older than that CUDA needs (nvidia-smi shows the newest it "
        "supports), or no GPU is visible here")


def test_a_driver_is_seen_in_proc_or_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(runtime.os.path, "exists", lambda p: seen.append(p) or False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    assert not runtime.nvidia_driver_visible() and seen == ["/proc/driver/nvidia"]
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert runtime.nvidia_driver_visible()


def test_cpu_stays_fp32_inside_a_callers_autocast() -> None:
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with autocast(torch.device("cpu")):
            assert (a @ a).dtype == torch.float32


def test_torch_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


#: Calls that decide a device, a precision or a thread count, and who may make them. The
#: resume code reads CUDA's presence only to save and restore the GPU's RNG states.
_RULED = {
    "torch.cuda.is_available": {"runtime.py", "training/resume.py"},
    "torch.cuda.is_bf16_supported": {"runtime.py"},
    "torch.amp.GradScaler": {"runtime.py"},
    "torch.autocast": {"runtime.py"},
    "torch.set_num_threads": {"runtime.py"},
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def test_no_module_but_runtime_decides_device_precision_or_threads() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in _RULED and rel not in _RULED[name]:
                    found.append(f"{rel}:{node.lineno}: {name}")
    assert not found, "call mcgf.runtime instead:\n" + "\n".join(found)

"""mcgf.runtime: the one place that picks devices, the precision rule and thread counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import mcgf
from mcgf.errors import UserError
from mcgf.runtime import autocast, default_device, precision, resolve_device, torch_threads

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


def test_precision_rule() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert precision(cuda) == "bf16-autocast"
    assert precision(cuda, "off") == precision(cpu) == precision(cpu, "off") == "fp32"


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

"""Catching mixed-device bugs on a machine without a GPU.

A tensor that grouprl creates without saying where is created on the CPU. On a CPU run that is harmless, so
CPU CI never notices; on a GPU run it meets a CUDA tensor and the step fails (or, worse, silently computes
on the host). ``FactoryGuard`` is a ``TorchFunctionMode`` that records every tensor factory called from
grouprl's own source (not from torch or transformers) without an explicit ``device=``, or with a device other
than the run's (an explicit ``"cpu"`` is allowed: it is a decision, visible in the source, e.g. the
sampler's random streams and the reward worker's values). ``factory_calls_without_device`` is the static
twin: every such call in ``src/grouprl`` passes ``device=``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

SRC = Path(__file__).resolve().parents[1] / "src" / "grouprl"

FACTORIES = ("zeros", "ones", "empty", "full", "arange", "tensor", "as_tensor", "rand", "randn", "randint",
             "randperm", "linspace", "eye", "normal")
_FUNCS = {getattr(torch, name) for name in FACTORIES}


class FactoryGuard(TorchFunctionMode):
    """Records ``(file:line, factory)`` for each factory call from ``src/grouprl`` that names no device, or a
    device that is neither ``device`` nor the CPU."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FUNCS:
            where = _caller()
            if where is not None:
                device = kwargs.get("device")
                if device is None:
                    self.found.append(f"{where}: torch.{func.__name__} without device=")
                elif torch.device(device).type not in (self.device.type, "cpu"):
                    self.found.append(f"{where}: torch.{func.__name__} on {device}")
        return func(*args, **kwargs)


_DISPATCH = str(Path(torch.overrides.__file__))


def _caller() -> str | None:
    """``path:line`` of the frame that called the factory if it is grouprl's (None: torch itself or a library
    called it; only torch's own dispatch frames are looked through)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == _DISPATCH:
        frame = frame.f_back
    if frame is None:
        return None
    name = Path(frame.f_code.co_filename).resolve()
    if SRC not in name.parents:
        return None
    return f"{name.relative_to(SRC.parent)}:{frame.f_lineno}"


def factory_calls_without_device(root: Path = SRC, allow: frozenset[str] = frozenset()) -> list[str]:
    """``path:line`` of every ``torch.<factory>(...)`` call under ``root`` without a ``device=`` keyword
    (docstrings are not code, so their examples do not count); files in ``allow`` are skipped."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root.parent))
        if rel in allow:
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in FACTORIES and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                    and not any(k.arg == "device" or k.arg is None for k in node.keywords)):
                found.append(f"{rel}:{node.lineno}: torch.{node.func.attr}")
    return found

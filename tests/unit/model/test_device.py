"""``model.device``, ``train.precision``, ``model.attn_implementation``: resolved once, and a device or
precision this machine lacks is one line (a ``ConfigError``), whatever machine CI runs on."""

from __future__ import annotations

import pytest
import torch

from grouprl.errors import ConfigError
from grouprl.model import device as devices
from grouprl.model.device import (
    check_attn_implementation,
    resolve_device,
    resolve_precision,
)
from grouprl.optim import Float32StateAdamW, build_optimizer


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine with one GPU, as far as the resolver can tell (nothing touches the GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_is_one_line(no_cuda):
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert "model.device=cuda" in one_line(err) and "CUDA is not available" in str(err.value)


def test_a_gpu_past_the_count_is_refused(one_gpu):
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:3")
    assert "1 GPU" in one_line(err) and "cuda:3" in str(err.value)


def test_auto_and_cuda_take_the_local_rank_under_torchrun(one_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_device("auto") == torch.device("cuda", 2)
    assert resolve_device("cuda") == torch.device("cuda", 2)
    with pytest.raises(ConfigError, match="every rank on one GPU"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "mps:0", ""])
def test_not_a_device(spec):
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device(spec)


def test_precision_auto_follows_the_device():
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"
    mixed = resolve_precision("auto", torch.device("cuda", 0))
    assert (mixed.name, mixed.weights, mixed.compute) == ("bf16-mixed", "float32", torch.bfloat16)
    # a weights dtype chosen by hand is trained in, without autocast, as before train.precision existed
    assert resolve_precision("auto", torch.device("cpu"), "bfloat16") == devices.Precision("bf16", "bfloat16")
    assert resolve_precision("fp32", torch.device("cpu")).autocast(torch.device("cpu"))().__enter__() is None


def test_bf16_on_a_cpu_without_bf16_kernels_is_one_line(monkeypatch):
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    for spec in ("bf16", "bf16-mixed"):
        with pytest.raises(ConfigError) as err:
            resolve_precision(spec, torch.device("cpu"))
        assert f"train.precision={spec}" in one_line(err) and "train.precision=fp32" in str(err.value)
    assert resolve_precision("fp32", torch.device("cpu")).name == "fp32"
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("bf16", torch.device("cpu")).weights == "bfloat16"


def test_mixed_precision_needs_float32_weights():
    with pytest.raises(ConfigError, match="model.dtype=float32"):
        resolve_precision("bf16-mixed", torch.device("cuda", 0), "bfloat16")
    with pytest.raises(ConfigError, match="is not a precision"):
        resolve_precision("fp16", torch.device("cpu"))


def test_flash_attention_without_its_package_is_one_line(monkeypatch):
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as err:
        check_attn_implementation("flash_attention_2")
    assert "flash_attn" in one_line(err)
    assert check_attn_implementation("sdpa") == "sdpa" and check_attn_implementation("eager") == "eager"
    with pytest.raises(ConfigError, match="is not one of"):
        check_attn_implementation("xformers")


def test_bf16_parameters_get_float32_adamw_moments():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 4, device="cpu").to(torch.bfloat16))
    opt = build_optimizer([weight], lr=1e-2, weight_decay=0.0, betas=(0.9, 0.99))
    assert isinstance(opt, Float32StateAdamW)
    before = weight.detach().clone()
    weight.grad = torch.ones(4, 4, dtype=torch.bfloat16, device="cpu")
    opt.step()
    state = opt.state[weight]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert weight.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16
    # Adam's first step moves every weight by about lr against the gradient's sign
    assert torch.allclose((before - weight.detach()).float(), torch.full((4, 4), 1e-2, device="cpu"),
                          atol=2 * 2.0 ** -8 * before.abs().max().item())
    saved = opt.state_dict()
    fresh = build_optimizer([weight], lr=1e-2, weight_decay=0.0, betas=(0.9, 0.99))
    fresh.load_state_dict(saved)
    assert fresh.state[weight]["exp_avg_sq"].dtype == torch.float32
    assert torch.equal(fresh.state[weight]["exp_avg_sq"], state["exp_avg_sq"])


def test_float32_parameters_keep_plain_adamw():
    weight = torch.nn.Parameter(torch.zeros(2, device="cpu"))
    assert type(build_optimizer([weight], lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))) is torch.optim.AdamW


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_the_attention_kernel_reaches_the_model(kernel):
    from grouprl.model.assets import DEFAULT_MODEL_DIR
    from grouprl.model.load import load_model

    model = load_model(DEFAULT_MODEL_DIR, attn_implementation=kernel, device="cpu")
    assert model.config._attn_implementation == kernel
    assert next(model.parameters()).device == torch.device("cpu")

"""Memory levers: chunked log-probs on a 32k vocabulary equal the naive ones; gradient checkpointing keeps the
gradient and stores less for backward; the start-up estimate adds up."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from grouprl.model.configs import tiny_llama_config
from grouprl.model.load import load_model
from grouprl.model.logprobs import position_ids_from_mask, sequence_logprobs
from grouprl.model.memory import (
    AUTO_BUDGET_MIB,
    activation_bytes_per_token,
    auto_activation_budget_mib,
    decoder_layers,
    enable_gradient_checkpointing,
    estimate,
    free_memory_mib,
    micro_batch_rows,
)
from tolerance import assert_close, assert_runs_close, forward_path_length, in_float64, logprob_scale

T = 6


def _model(vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_llama_config(vocab, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64)
    return AutoModelForCausalLM.from_config(config).eval()


def _batch(vocab: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (4, 5 + T), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    mask[2, -2:] = 0  # a shorter completion
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_equals_unchunked_on_a_32k_vocabulary(dtype):
    """Chunked and naive round differently along the whole forward, the 32k normaliser most: float32 holds
    them to 2e-3 (log-probs ~10.4), float64 to 4e-12, which a vocabulary column dropped (~3e-5) exceeds."""
    model = in_float64(_model(32_768)) if dtype == torch.float64 else _model(32_768)
    ids, mask = _batch(32_768)
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, ids, mask, T, chunk_size=5, with_entropy=True)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        full = torch.log_softmax(logits[:, -T - 1:-1], dim=-1)  # [N, T, V], the naive way
        naive = full.gather(-1, ids[:, -T:, None]).squeeze(-1) * mask[:, -T:]
        naive_entropy = -(full.exp() * full).sum(-1) * mask[:, -T:]
    n, scale = forward_path_length(model.config, ids.shape[1]), logprob_scale(logits)
    assert_close(logp, naive, n=n, scale=scale)
    assert_close(entropy, naive_entropy, n=n, scale=scale)
    assert (logp[2, -2:] == 0).all() and (logp[2, :-2] < -5).all()


def _saved_bytes_and_grads(model, ids, mask):
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, _ = sequence_logprobs(model, ids, mask, T, chunk_size=8)
    (logp * mask[:, -T:]).sum().backward()
    return sum(saved), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_keeps_the_gradient_and_saves_less():
    plain, checkpointed = _model(64), _model(64)
    assert enable_gradient_checkpointing(checkpointed) == len(decoder_layers(checkpointed)) == 3
    ids, mask = _batch(64)
    bytes_plain, grads_plain = _saved_bytes_and_grads(plain, ids, mask)
    bytes_ckpt, grads_ckpt = _saved_bytes_and_grads(checkpointed, ids, mask)
    # The recomputed forward, then backward through it and the sums over the batch's tokens; a gradient's
    # terms are taken to be no larger than the largest gradient
    n = forward_path_length(plain.config, ids.shape[1]) + ids.numel()
    scale = max(g.abs().max().item() for g in grads_plain.values())
    for name, grad in grads_plain.items():
        assert_close(grads_ckpt[name], grad, n=n, scale=scale)
    assert bytes_ckpt < 0.5 * bytes_plain, (bytes_ckpt, bytes_plain)
    with torch.no_grad():  # no recording, no checkpoint: the rollout path is untouched, the same operations
        a, _ = sequence_logprobs(checkpointed, ids, mask, T)
        b, _ = sequence_logprobs(plain, ids, mask, T)
    assert torch.equal(a, b)


@pytest.mark.parametrize("lora", [False, True])
def test_memory_estimate_adds_up(lora):
    model = _model(64)
    if lora:
        model.requires_grad_(False).lm_head.requires_grad_(True)
    est = estimate(model, separate_reference=not lora, micro_batch_size=4, seq_len=16, chunk_size=8,
                   gradient_checkpointing=False)
    # Exact: byte counts are integers, dividing them by 2**20 is exact, and the total adds the same values in
    # the same order
    weights = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad) / 2**20
    assert est["weights"] == weights and est["gradients"] == trainable and est["optimizer"] == 2 * trainable
    assert est["reference"] == (0.0 if lora else weights)
    assert est["total"] == sum(v for k, v in est.items() if k != "total")


def test_a_run_with_gradient_checkpointing_matches_one_without(tmp_path, monkeypatch):
    """End to end through the trainer. Checkpointing turns the shared-prompt passes off, so the plain run
    has them off too: then the two runs compute the same thing, up to the rounding of the recomputed forward
    and the order in which autograd sums gradient contributions (seen: 2e-6 relative in grad_norm; with
    prompt sharing left on, 2e-3)."""
    import json

    from transformers import AutoConfig

    from grouprl.cli.main import main
    from grouprl.model import passes as stages
    from grouprl.model.assets import DEFAULT_MODEL_DIR

    args = ["train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=0",
            "data.num_train=16", "output.progress=false", "train.lr=1e-4"]
    rows = []
    for name, extra in (("plain", []), ("ckpt", ["model.gradient_checkpointing=true"])):
        with monkeypatch.context() as m:
            if not extra:
                m.setattr(stages, "can_share_prompts", lambda model: False)
            assert main(["train", *args, *extra, f"output.run_dir={tmp_path / name}"]) == 0
        rows.append([json.loads(line)
                     for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    assert min(r["grad_norm"] for r in rows[0]) > 0.5, "a tiny, cancelling gradient would only show rounding"
    config = AutoConfig.from_pretrained(DEFAULT_MODEL_DIR)
    assert_runs_close(*rows, n=forward_path_length(config, config.max_position_embeddings),
                      keys=("loss/policy", "grad_norm", "entropy", "reward/mean", "kl/mean"))


def test_micro_batch_rows_fit_the_budget_and_balance():
    per_token = 1024.0  # bytes
    # 64 rows of 38 tokens = 2.4 MiB; a 1 MiB budget holds 26 rows -> 3 micro-batches of 22, 21, 21
    assert micro_batch_rows(64, 38, per_token, 1.0) == 22
    assert micro_batch_rows(64, 38, per_token, 100.0) == 64  # everything fits: one micro-batch
    assert micro_batch_rows(64, 10_000, per_token, 1.0) == 1  # not even one row fits: one row at a time
    assert micro_batch_rows(0, 38, per_token, 1.0) == 1  # a rank without rows this step
    for rows, width in [(256, 14), (64, 38), (7, 100)]:
        m = micro_batch_rows(rows, width, per_token, 0.5)
        assert m * width * per_token <= 0.5 * 2**20 or m == 1
        parts = -(-rows // m)
        assert rows - (parts - 1) * m >= m - parts  # the last micro-batch is nearly as large as the others


def test_activation_estimate_scales_with_hidden_and_layers(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    c = model.config
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    expected = (10 * c.hidden_size + 2 * kv + 4 * c.intermediate_size) * 4 * c.num_hidden_layers
    assert activation_bytes_per_token(model) == expected
    assert activation_bytes_per_token(model, gradient_checkpointing=True) < activation_bytes_per_token(model)


@pytest.mark.parametrize("intermediate", [128, 352])  # 2 × and 5.5 × hidden (Llama-like, Qwen-like MLPs)
def test_activation_estimate_is_close_to_what_backward_keeps(char_tokenizer, intermediate):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(len(char_tokenizer), hidden_size=64,
                                                               num_layers=4, intermediate_size=intermediate))
    kept: dict[int, int] = {}

    def pack(t):  # count each saved storage once (several saves can share one)
        if t.requires_grad or t.grad_fn is not None or t.is_floating_point():
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(4, 90, (16, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids).last_hidden_state.sum()
    layer_weights = sum(p.numel() * 4 for p in model.parameters())  # weights are saved too: not activations
    measured = (sum(kept.values()) - layer_weights) / ids.numel()
    estimate = activation_bytes_per_token(model)
    assert 0.7 * measured <= estimate <= 1.5 * measured


def test_activation_estimate_reads_a_nested_text_config():
    from types import SimpleNamespace

    from transformers import Gemma3Config

    assert activation_bytes_per_token(SimpleNamespace(config=Gemma3Config())) > 0


def test_the_auto_activation_budget_is_a_quarter_of_what_is_left_within_bounds():
    low, high = AUTO_BUDGET_MIB
    assert auto_activation_budget_mib(10_000, 2_000) == 2_000  # (free - gradients and moments) / 4
    assert auto_activation_budget_mib(1_000, 2_000) == low  # nothing left: the floor, not a negative budget
    assert auto_activation_budget_mib(10**7, 0) == high
    assert auto_activation_budget_mib(None, 0) == low  # free memory unknown
    free = free_memory_mib()
    assert free is None or free >= 0


def test_the_auto_budget_is_printed_and_a_given_budget_is_kept(tmp_path, monkeypatch, capsys):
    """0 (the default) picks the budget from the free memory; a given budget or micro-batch size is kept."""
    from grouprl.cli.main import main
    from grouprl.train import setup

    args = ["train.steps=1", "train.prompts_per_step=2", "rollout.num_generations=2", "data.num_eval=0",
            "data.num_train=4", "output.progress=false"]
    monkeypatch.setattr(setup, "free_memory_mib", lambda device: 5_000.0)
    assert main(["train", *args, f"output.run_dir={tmp_path / 'auto'}"]) == 0
    out = "".join(capsys.readouterr())
    from grouprl.model.assets import DEFAULT_MODEL_DIR

    trainable = sum(p.numel() for p in load_model(str(DEFAULT_MODEL_DIR)).parameters()) * 4 / 2**20
    expected = auto_activation_budget_mib(5_000.0, 3 * trainable)
    assert f"activation budget {expected:,.0f} MiB (auto, 5,000 MiB free)" in out
    set_dir = f"output.run_dir={tmp_path / 'set'}"
    assert main(["train", *args, "train.activation_budget_mib=500", set_dir]) == 0
    assert "activation budget" not in "".join(capsys.readouterr())

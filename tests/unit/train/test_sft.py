"""Supervised warm-start: completion-only loss, determinism, learning, and the shipped default checkpoint."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from grouprl.data.tasks import get_task
from grouprl.model.assets import DEFAULT_MODEL_DIR
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.train.sft import IGNORE, collate, completion_loss, encode_rows, sft, warmup_cosine
from tolerance import forward_path_length, logprob_scale, tol

ROWS = [{"prompt": "12+30=", "answer": "42"}, {"prompt": "7+5=", "answer": "12"},
        {"prompt": "99+1=", "answer": "100"}]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def test_encode_rows_labels_only_the_answer_and_eos(tokenizer):
    (ids, labels), *_ = encode_rows(tokenizer, ROWS)
    eos = tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]) == "12+30=42" and ids[-1] == eos
    assert labels == [IGNORE] * 6 + tokenizer("42")["input_ids"] + [eos]


def test_an_episode_is_labelled_on_the_model_turns_and_their_eos_only(tokenizer):
    from grouprl.cli.sft_env import demonstrations
    from grouprl.env.episode import Renderer

    row = {"prompt": "Ann has 37 pens, buys 5. Pens?", "answer": "42"}
    right, wrong = (demonstrations([row], rate, 0, Renderer(tokenizer, [], [tokenizer.eos_token_id]))[0]
                    for rate in (0.0, 0.999))
    assert '"name":"add"' in right["turns"][0][0] and '"name":"sub"' in wrong["turns"][0][0]
    assert right["turns"][2] == ("42", True) and wrong["turns"][2] == ("32", True)
    (ids, labels), = encode_rows(tokenizer, [right])
    eos = tokenizer.eos_token_id
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    call, reply = encode(right["turns"][0][0]), encode(right["turns"][1][0])
    assert ids == encode(row["prompt"]) + call + [eos] + reply + encode("42") + [eos]
    assert labels == ([IGNORE] * len(encode(row["prompt"])) + call + [eos] + [IGNORE] * len(reply)
                      + encode("42") + [eos])


def test_loss_has_no_gradient_through_prompt_predictions(tokenizer):
    batch = collate(encode_rows(tokenizer, ROWS), tokenizer.pad_token_id)
    logits = torch.randn(*batch["input_ids"].shape, len(tokenizer), requires_grad=True)
    completion_loss(logits, batch["labels"]).backward()
    grad_norm = logits.grad.norm(dim=-1)  # [b, L]; position t predicts token t + 1
    predicts_completion = batch["labels"][:, 1:] != IGNORE
    assert (grad_norm[:, :-1][predicts_completion] > 0).all()
    assert (grad_norm[:, :-1][~predicts_completion] == 0).all() and (grad_norm[:, -1] == 0).all()


def test_first_sft_loss_is_completion_only_cross_entropy(tokenizer):
    """With the whole data set in one batch, step 1's loss is the pre-update mean CE of the answer + EOS
    tokens."""
    model = tiny_model(tokenizer)
    nll, count, all_nll, all_count, scale = 0.0, 0, 0.0, 0, 0.0
    with torch.no_grad():
        for row in ROWS:
            prompt, answer = tokenizer(row["prompt"])["input_ids"], tokenizer(row["answer"])["input_ids"]
            ids = torch.tensor([prompt + answer + [tokenizer.eos_token_id]])
            logits = model(ids).logits[0, :-1]
            token_nll = -logits.log_softmax(-1).gather(1, ids[0, 1:, None]).squeeze(1)
            nll, count = nll + token_nll[len(prompt) - 1 :].sum().item(), count + len(answer) + 1
            all_nll, all_count = all_nll + token_nll.sum().item(), all_count + len(token_nll)
            scale = max(scale, logprob_scale(logits))
    losses = sft(model, tokenizer, ROWS, steps=1, batch_size=len(ROWS), lr=1e-3, seed=0)
    # a padded batch against one row at a time: the forward rounds differently, then the mean over the tokens
    n = forward_path_length(model.config, model.config.max_position_embeddings) + count
    atol = tol(torch.float32, n, scale)
    assert losses[0] == pytest.approx(nll / count, abs=atol)
    assert abs(nll / count - all_nll / all_count) > atol  # a loss that included the prompt would fail above


def test_sft_reduces_loss_and_is_deterministic(tokenizer):
    rows = get_task("arithmetic").generate("train", 64, seed=0)
    runs = [sft(tiny_model(tokenizer), tokenizer, rows, steps=30, batch_size=16, lr=1e-2, seed=1, warmup=5)
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) / 5 < 0.6 * sum(runs[0][:5]) / 5


def test_warmup_cosine_schedule():
    # warm-up: (step + 1) / warmup; then 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))
    atol = tol(torch.float64, 4)  # float64: a division, cos, an addition, a product
    cosine = pytest.approx(0.5, abs=atol)
    assert [warmup_cosine(s, warmup=4, total=12) for s in (0, 3, 4, 8)] == [0.25, 1.0, 1.0, cosine]
    assert warmup_cosine(12, warmup=4, total=12) == pytest.approx(0.0, abs=atol)
    assert warmup_cosine(0, warmup=0, total=10) == 1.0 and not math.isnan(warmup_cosine(5, warmup=5, total=5))


def test_default_asset_loads_with_plain_transformers_and_answers_in_format():
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR).eval()
    assert tokenizer.padding_side == "left" and sum(p.numel() for p in model.parameters()) < 2_000_000
    prompts = [r["prompt"] for r in get_task("arithmetic").generate("eval", 16, seed=0)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(
        **batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        end = row.index(tokenizer.eos_token_id)  # raises if the model never stopped
        assert tokenizer.decode(row[:end]).isdigit()

"""Between text and a backend's token ids: prompts in, completions out."""

from __future__ import annotations

from grouprl.types import Rollout


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def decode_completions(tokenizer, rollout: Rollout) -> tuple[list[str], list[list[int]]]:
    """Each completion's text (no special tokens) and its token ids, unpadded (as TRL passes them)."""
    ids = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, tokenizer.pad_token_id)
    lengths = rollout.completion_mask.sum(-1).tolist()
    return (tokenizer.batch_decode(ids, skip_special_tokens=True),
            [row[:n] for row, n in zip(ids.tolist(), lengths)])

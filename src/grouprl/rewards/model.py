"""A learned reward: any Hugging Face sequence-classification model scoring ``prompt + completion``.

Configure it as ``rewards: [{name: reward_model, path: DIR_OR_HUB_ID, weight: 1.0, device: cpu}]``. The score
is the model's first logit (a single-label reward model). The model is loaded once, before the reward worker
is forked, and runs there on one thread. ``device`` (cpu, the default; cuda or cuda:N) is its own, apart from
``model.device``: a forked worker cannot use CUDA, so a GPU reward model needs ``reward_isolation: false``
(the trainer checks).

What it reads is what TRL feeds a reward model: ``prompt + completion`` for text rows; for chat rows the
prompt's messages followed by the completion's, through the reward model's own chat template (without one,
the messages' contents joined).
"""

from __future__ import annotations

import torch

from grouprl.messages import as_completion, completion_text


class RewardModel:
    """Callable with the TRL reward protocol; ``__name__`` is ``reward_model`` for the metrics."""

    __name__ = "reward_model"

    def __init__(self, path: str, *, batch_size: int = 16, max_length: int = 1024,
                 trust_remote_code: bool = False, device: torch.device | str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from grouprl.model.load import check_source

        source = check_source(path, "reward model")
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                       padding_side="right")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            source, use_safetensors=True, trust_remote_code=trust_remote_code).to(device).eval()
        self.device = torch.device(device)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        texts = [self._text(p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length, add_special_tokens=False)
            scores += self.model(**batch.to(self.device)).logits[:, 0].float().tolist()
        return scores

    def _text(self, prompt, completion) -> str:
        """The text the reward model scores for one sample."""
        text = completion_text(completion) or ""
        if isinstance(prompt, str):
            return prompt + text
        messages = [*prompt, *as_completion(prompt, text)]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "".join(m["content"] for m in messages)

"""Prompt rows for training and evaluation, and a seeded, resumable cursor over them."""

from __future__ import annotations

import json
import random
from pathlib import Path

from grouprl.data.tasks import get_task


class DataError(ValueError):
    """A dataset that cannot be used: the message names the file, line or column and the fix."""


def load_rows(path: str, prompt_column: str) -> list[dict]:
    """Rows of a JSONL file; every row must have ``prompt_column``."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"dataset {file} does not exist; check data.path")
    rows = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{file} line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or prompt_column not in row:
            raise DataError(f"{file} line {number}: no '{prompt_column}' column; set data.prompt_column")
        rows.append(row)
    if not rows:
        raise DataError(f"dataset {file} is empty")
    return rows


def task_rows(task_name: str, task_kwargs: dict, split: str, n: int, seed: int) -> list[dict]:
    return get_task(task_name, **task_kwargs).generate(split, n, seed)


class PromptSource:
    """Cycles through ``rows``, reshuffled at every epoch with a seed of its own; its state is the cursor."""

    def __init__(self, rows: list[dict], seed: int) -> None:
        if not rows:
            raise DataError("no prompts to train on")
        self.rows, self.seed = rows, seed
        self.epoch, self.pos = 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            out.append(self.rows[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._shuffled(self.epoch)

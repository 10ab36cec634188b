"""Prompt rows for training and evaluation, and a seeded, resumable cursor over them."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from grouprl.data.tasks import get_task
from grouprl.errors import DataError, read_utf8


def _jsonl(file: Path) -> list[tuple[str, object]]:
    out = []
    for number, line in enumerate(read_utf8(file, DataError).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{file} line {number}: not valid JSON ({err.msg})") from None
    return out


def _json(file: Path) -> list[tuple[str, object]]:
    try:
        data = json.loads(read_utf8(file, DataError))
    except json.JSONDecodeError as err:
        raise DataError(f"{file} line {err.lineno}: not valid JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{file}: expected a JSON list of rows (or {{\"data\": [...]}})")
    return [(f"row {i}", row) for i, row in enumerate(data)]


def _csv(file: Path) -> list[tuple[str, object]]:
    reader = csv.DictReader(io.StringIO(read_utf8(file, DataError), newline=""))
    return [(f"line {reader.line_num}", dict(row)) for row in reader]


def _datasets(source: str, kind: str, config: str | None = None, split: str = "train",
              data_files=None) -> list[tuple[str, object]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{source}: reading {kind} needs the datasets library: "
                        "pip install 'grouprl[datasets]'") from None
    try:
        if kind == "parquet":
            data = datasets.Dataset.from_parquet(source)
        elif kind == "a saved dataset":
            data = datasets.load_from_disk(source)
        else:
            data = datasets.load_dataset(source, name=config, split=split, data_files=data_files)
    except Exception as err:  # noqa: BLE001 - any failure of the library is a data error for the user
        raise DataError(f"{source}: could not read {kind} "
                        f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{source}: a DatasetDict without a '{split}' split (has {', '.join(data)}); "
                            "set data.split")
        data = data[split]
    return [(f"row {i}", row) for i, row in enumerate(data)]


def load_rows(path: str, prompt_column: str, *, config: str | None = None, split: str = "train",
              data_files=None) -> list[dict]:
    """Rows of a prompt dataset: .jsonl, .json, .csv, .parquet, a ``save_to_disk`` directory, a hub id, or a
    ``datasets`` builder name with ``data_files``.

    Local .jsonl / .json / .csv files are read by grouprl itself, so every value arrives as the file wrote it
    (``datasets``' JSON reader turns a column of mixed types into decoded JSON, "2" into 2, and its CSV reader
    infers numbers) and a broken line is named by file, line and column. Everything else goes through
    ``datasets``: ``config`` and ``split`` choose a hub dataset's configuration and split (``split`` also a
    saved ``DatasetDict``'s), ``data_files`` is passed to ``datasets.load_dataset``.

    Every row must have ``prompt_column`` (or a chat ``messages`` list); it is copied to ``row["prompt"]``,
    and every other column is passed to the reward functions.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if data_files is not None:
        raw = _datasets(path, f"a datasets source with data_files={data_files!r}", config, split, data_files)
    elif file.is_dir():
        raw = _datasets(str(file), "a saved dataset", split=split)
    elif file.is_file():
        readers = {".jsonl": _jsonl, ".json": _json, ".csv": _csv}
        if suffix == ".parquet":
            raw = _datasets(str(file), "parquet")
        elif suffix in readers:
            raw = readers[suffix](file)
        else:
            raise DataError(f"dataset {file}: unknown format {suffix!r}; use .jsonl, .json, .csv, .parquet "
                            "or a datasets directory")
    elif "/" in path and not path.startswith((".", "/", "~")) and path.count("/") == 1:
        raw = _datasets(path, "a hub dataset", config, split)
    else:
        raise DataError(f"dataset {file} does not exist; check data.path")
    rows = []
    for where, row in raw:
        if not isinstance(row, dict):
            raise DataError(f"{file} {where}: expected an object with a '{prompt_column}' column")
        if prompt_column in row:
            column, prompt = prompt_column, row[prompt_column]
        elif "messages" in row:
            column, prompt = "messages", row["messages"]
        else:
            raise DataError(f"{file} {where}: no '{prompt_column}' column; set data.prompt_column")
        problem = _prompt_problem(prompt)
        if problem:
            raise DataError(f"{file} {where}: the '{column}' column {problem}")
        if column == "messages":
            prompt = [m for m in prompt if m["role"] != "assistant"]
        rows.append({**row, "prompt": prompt})
    if not rows:
        raise DataError(f"dataset {file} is empty")
    return rows


def _prompt_problem(prompt) -> str | None:
    """What is wrong with a prompt value, or None: it must be non-empty text or a list of chat messages."""
    if isinstance(prompt, str):
        return "is empty" if not prompt.strip() else None
    if isinstance(prompt, list):
        if not prompt:
            return "is an empty list of messages"
        for i, message in enumerate(prompt):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):
                return (f"has message {i} = {str(message)[:60]!r}; each message must be "
                        "{\"role\": str, \"content\": str}")
        return None
    kind = {bool: "true/false", int: "a number", float: "a number", dict: "a mapping",
            type(None): "null"}.get(type(prompt), f"a {type(prompt).__name__}")
    return (f"is {kind} ({repr(prompt)[:40]}); a prompt must be a string or a list of "
            "{\"role\", \"content\"} messages")


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

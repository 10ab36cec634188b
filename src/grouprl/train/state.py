"""A checkpoint's trainer state, in two files that load without running any code.

``trainer_state.json``
    the step, the data cursor, the scheduler's state, the optimizer's param groups (hyper-parameters, and the
    parameters each group holds: indices, or names under FSDP) and every rank's Python and NumPy RNG state.
``trainer_state.safetensors``
    the optimizer's tensors, ``optimizer.<i>.<name>`` (AdamW's ``step``, ``exp_avg`` and ``exp_avg_sq`` of
    the i-th parameter of the param groups, in order), and every rank's torch RNG state, ``rng.<rank>.torch``.

Reading uses ``json.loads`` and ``safetensors`` only, so a checkpoint someone else wrote cannot run code here;
the ``trainer_state.pt`` of older versions (a pickle, which can) is never opened. What is read is checked
against the live run (keys, lengths, kinds of values, shapes) before anything is applied, and every problem
(a file missing, truncated, not JSON, of the wrong structure) is one ``ResumeError`` naming the file.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from grouprl.errors import ResumeError

FORMAT = 1
JSON_FILE = "trainer_state.json"
TENSOR_FILE = "trainer_state.safetensors"
PICKLE_FILE = "trainer_state.pt"  # written by grouprl before FORMAT 1; never loaded
ADAMW_FIELDS = {"step", "exp_avg", "exp_avg_sq"}  # grouprl's optimizer is always AdamW (optim.py)
_TOP_KEYS = {"format", "step", "data", "scheduler", "optimizer", "rng"}
_TENSOR_KEY = re.compile(r"(optimizer|rng)\.(0|[1-9][0-9]*)\.([A-Za-z_][A-Za-z0-9_]*)")


def rng_state() -> dict:
    """This process's Python, NumPy and torch (CPU) RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or garbled file is a ``ResumeError`` naming
    it."""
    if not path.is_file():
        raise ResumeError(f"{path} is missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise ResumeError(f"{path} does not load ({type(err).__name__}: {_first_line(err)}); the file is "
                          "damaged") from None


def write_trainer_state(directory: Path, state: dict) -> None:
    """Write ``state`` (``step``; ``optimizer``, a state dict whose ``state`` is keyed like the ``params`` of
    its ``param_groups``; ``scheduler``; ``data``; ``rng``, one ``rng_state()`` per rank) as the two files."""
    optimizer = state["optimizer"]
    keys = [key for group in optimizer["param_groups"] for key in group["params"]]
    tensors = {f"optimizer.{i}.{name}": value.detach().cpu().contiguous()
               for i, key in enumerate(keys) for name, value in optimizer["state"].get(key, {}).items()}
    tensors.update({f"rng.{rank}.torch": rng["torch"].clone() for rank, rng in enumerate(state["rng"])})
    save_file(tensors, directory / TENSOR_FILE)
    doc = {"format": FORMAT, "step": state["step"], "data": state["data"], "scheduler": state["scheduler"],
           "optimizer": {"param_groups": optimizer["param_groups"]},
           "rng": [{"python": rng["python"], "numpy": _numpy_to_json(rng["numpy"])} for rng in state["rng"]]}
    if state.get("entropy_alpha") is not None:  # (i) the adapted entropy coefficient of an entropy target
        doc["entropy_alpha"] = float(state["entropy_alpha"])
    (directory / JSON_FILE).write_text(json.dumps(doc))


def _numpy_to_json(state: tuple) -> list:
    name, key_words, pos, has_gauss, cached = state
    return [name, key_words.tolist(), int(pos), int(has_gauss), float(cached)]


def read_trainer_state(directory: Path, like: dict) -> dict:
    """The state ``write_trainer_state`` wrote, checked against ``like``, the live run's own: ``data`` and
    ``scheduler`` (their state dicts) and ``optimizer`` (its param groups, each with ``params`` as
    ``(key, shape)`` pairs). Tuples are tuples again, so applying the result cannot fail half-way."""
    path, tensor_path = directory / JSON_FILE, directory / TENSOR_FILE
    if not path.is_file():
        if (directory / PICKLE_FILE).is_file():
            raise ResumeError(f"checkpoint {directory} has only {PICKLE_FILE}, the pickle format of older "
                              "grouprl versions: it is not loaded, because unpickling a file can run any "
                              "code; start the run afresh (another output.run_dir)")
        raise ResumeError(f"{path} is missing")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as err:
        raise ResumeError(f"{path} is not valid JSON ({err}); the file is damaged") from None
    tensors = load_tensors(tensor_path)
    _check(isinstance(doc, dict) and set(doc) - {"entropy_alpha"} == _TOP_KEYS and doc["format"] == FORMAT,
           path,
           f"expected an object with keys {', '.join(sorted(_TOP_KEYS))} and format {FORMAT}")
    _check(type(doc["step"]) is int and doc["step"] >= 0, path, "step is not a count of steps")
    alpha = doc.get("entropy_alpha")
    _check(alpha is None or (type(alpha) in (int, float) and 0 <= alpha < float("inf")), path,
           "entropy_alpha is not a coefficient >= 0")
    rngs = doc["rng"]
    _check(isinstance(rngs, list) and len(rngs) > 0, path, "rng is not a list of per-rank states")
    for name in tensors:
        match = _TENSOR_KEY.fullmatch(name)
        _check(match is not None
               and (match[1] == "optimizer" or (int(match[2]) < len(rngs) and match[3] == "torch")),
               tensor_path, f"unexpected tensor {name!r}")
    out = {"step": doc["step"], "optimizer": _optimizer(doc["optimizer"], tensors, like["optimizer"], path,
                                                        tensor_path),
           "rng": [_rng(rng, tensors, rank, path) for rank, rng in enumerate(rngs)], "entropy_alpha": alpha}
    for key in ("data", "scheduler"):
        try:
            out[key] = conform(like[key], doc[key], key)
        except ValueError as err:
            raise _damaged(path, str(err)) from None
    return out


def _optimizer(doc, tensors: dict, like: list[dict], path: Path, tensor_path: Path) -> dict:
    """The optimizer's state dict: param groups from the JSON (checked against ``like``), tensors by
    parameter."""
    groups = doc.get("param_groups") if isinstance(doc, dict) else None
    _check(isinstance(groups, list) and len(groups) == len(like) and all(isinstance(g, dict) for g in groups),
           path, f"optimizer.param_groups is not a list of {len(like)} group(s)")
    params, conformed = [], []
    for i, (group, template) in enumerate(zip(groups, like)):
        keys = [key for key, _ in template["params"]]
        if group.get("params") != keys:
            raise ResumeError(f"{path}: optimizer.param_groups[{i}] holds other parameters than this run's "
                              f"{len(keys)}; resume with the same model.name_or_path, model.lora and "
                              "train.fsdp settings")
        try:
            hyper = conform({k: v for k, v in template.items() if k != "params"},
                            {k: v for k, v in group.items() if k != "params"}, f"optimizer.param_groups[{i}]")
        except ValueError as err:
            raise _damaged(path, str(err)) from None
        conformed.append({**hyper, "params": keys})
        params += template["params"]
    state: dict = {}
    for name, tensor in tensors.items():
        kind, index, field = name.split(".")
        if kind == "optimizer":
            _check(int(index) < len(params), tensor_path, f"{name}: there are only {len(params)} parameters")
            state.setdefault(int(index), {})[field] = tensor
    for index, fields in state.items():
        shape = params[index][1]
        _check(set(fields) == ADAMW_FIELDS and all(t.is_floating_point() for t in fields.values())
               and fields["step"].dim() == 0
               and fields["exp_avg"].shape == fields["exp_avg_sq"].shape == shape,
               tensor_path, f"optimizer.{index}.*: not AdamW's {', '.join(sorted(ADAMW_FIELDS))} "
               f"for a parameter of shape {list(shape)}")
    return {"state": {params[index][0]: fields for index, fields in state.items()}, "param_groups": conformed}


def _rng(doc, tensors: dict, rank: int, path: Path) -> dict:
    """Rank ``rank``'s RNG states, each tried on a throwaway generator first (which checks it fully)."""
    torch_state, tensor_path = tensors.get(f"rng.{rank}.torch"), path.with_name(TENSOR_FILE)
    _check(torch_state is not None, tensor_path, f"no tensor rng.{rank}.torch")
    try:
        torch.Generator().set_state(torch_state)
    except (TypeError, RuntimeError) as err:
        raise _damaged(tensor_path,
                       f"rng.{rank}.torch is not a torch RNG state ({_first_line(err)})") from None
    try:
        version, internal, gauss = doc["python"]
        if not (gauss is None or type(gauss) is float):
            raise TypeError(f"gauss_next is {gauss!r}")
        python = (version, tuple(internal), gauss)
        random.Random().setstate(python)
        name, key_words, pos, has_gauss, cached = doc["numpy"]
        if not (all(type(w) is int for w in key_words) and type(pos) is int and 0 <= pos <= len(key_words)):
            raise TypeError("the key is not a list of integers with a position in it")  # numpy reads key[pos]
        numpy = (name, np.array(key_words, dtype=np.uint32), pos, has_gauss, cached)
        np.random.RandomState().set_state(numpy)
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise _damaged(path, f"rng[{rank}] is not an RNG state "
                             f"({type(err).__name__}: {_first_line(err)})") from None
    return {"python": python, "numpy": numpy, "torch": torch_state}


def conform(template, value, where: str):
    """``value`` (parsed JSON) shaped like ``template`` (the live run's own state): the same keys, list
    lengths and kinds of scalars; tuples where the template has tuples. A ``ValueError`` names the first place
    it is not. A ``None`` in the template (an unset option) accepts any scalar."""
    if isinstance(template, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is not an object")
        missing, unknown = sorted(set(template) - set(value)), sorted(set(value) - set(template))
        if missing or unknown:
            raise ValueError(f"{where} lacks {missing or 'nothing'} and has unknown {unknown or 'nothing'}")
        return {key: conform(template[key], value[key], f"{where}.{key}") for key in template}
    if isinstance(template, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(template):
            raise ValueError(f"{where} is not a list of {len(template)}")
        items = [conform(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(template, value))]
        return tuple(items) if isinstance(template, tuple) else items
    if not _same_kind(template, value):
        raise ValueError(f"{where} is {value!r}; this run's is of type {type(template).__name__}")
    return float(value) if isinstance(template, float) else value


def _same_kind(template, value) -> bool:
    if template is None:
        return value is None or isinstance(value, (bool, int, float, str))
    if isinstance(template, bool) or isinstance(value, bool):
        return isinstance(template, bool) and isinstance(value, bool)
    if isinstance(template, int):
        return isinstance(value, int)
    if isinstance(template, float):
        return isinstance(value, (int, float))
    return isinstance(template, str) and isinstance(value, str)


def _check(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise _damaged(path, what)


def _damaged(path: Path, what: str) -> ResumeError:
    return ResumeError(f"{path}: {what}; the checkpoint is damaged, or not one this grouprl wrote")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]

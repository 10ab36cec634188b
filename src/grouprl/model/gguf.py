"""GGUF files as a model source: checked, loaded as an ordinary float model, and written as a HF directory.

transformers reads a GGUF's config, tokenizer (chat template included) and tensors itself, through the
``gguf`` package, and dequantises every tensor to float32. What this module adds:

- the file is checked first, from its header alone (``read_header``: no tensor is read, and the vocabulary
  is skipped, not decoded), so a truncated file, a file that is not GGUF, or an architecture transformers
  cannot load from GGUF is one ``ModelError`` line instead of an exception from deep inside numpy;
- the model transformers returns is tied to its GGUF quantizer and refuses ``save_pretrained``, so training
  could not checkpoint it. Its weights are copied into a model built from the same config (``from_config``,
  with the global RNG left as it was), an ordinary HF model that saves, trains and wraps like any other.

So a GGUF of a quantised model becomes a float32 model with the quantised values: what it computes is what
the GGUF computes, not the original unquantised checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import mmap
import os
import shutil
import struct
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from grouprl.errors import ModelError

SOURCE_FILE = "grouprl_source.json"
"""Written into a converted directory: the GGUF it came from (name, sha256, architecture), the tools used."""

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

INSTALL_HINT = "install the gguf package (pip install 'grouprl[gguf]')"

# GGUF metadata value types (the GGUF specification's numbering): the fixed-size ones as struct formats.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_SPECIAL_IDS = {role: f"tokenizer.ggml.{key}_token_id" for role, key in (
    ("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding"))}
_KEEP = ("general.architecture", "general.name", "general.alignment", *_SPECIAL_IDS.values())
_VERSIONS = (2, 3)  # version 1 counted in 32 bits and is not read by transformers


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file's header says, and how many bytes its tensors need."""

    path: Path
    version: int
    architecture: str
    name: str | None
    tensor_types: dict[str, int] = field(default_factory=dict)  # ggml type name -> tensors of that type
    needed_bytes: int = 0  # the end of the last tensor's data: the file is at least this long when complete
    special_ids: dict[str, int] = field(default_factory=dict)  # "eos_token" -> the id the file names

    def describe(self) -> str:
        types = ", ".join(f"{count} {name}" for name, count in sorted(self.tensor_types.items()))
        return f"{self.path.name}: {self.architecture} ({self.name or 'unnamed'}), {types}"


class _Cursor:
    """Little-endian reads from a buffer; reading past its end raises ``struct.error``."""

    def __init__(self, blob) -> None:
        self.blob, self.pos = blob, 0

    def many(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.blob, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def take(self, fmt: str):
        values = self.many(fmt)
        return values[0] if len(values) == 1 else values

    def string(self, keep: bool = True) -> str | None:
        length = self.take("Q")
        if self.pos + length > len(self.blob):
            raise struct.error("string past the end of the file")
        start, self.pos = self.pos, self.pos + length
        return bytes(self.blob[start:self.pos]).decode("utf-8") if keep else None

    def value(self, kind: int, keep: bool):
        """One metadata value; arrays (the vocabulary, the merges) are skipped, never decoded."""
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string(keep)
        if kind != _ARRAY:
            raise struct.error(f"unknown metadata value type {kind}")
        item, count = self.take("IQ")
        if item in _SCALARS:
            self.pos += count * struct.calcsize(_SCALARS[item])
        elif count > len(self.blob) - self.pos:  # each item takes at least one byte: a corrupt count
            raise struct.error("array longer than the file")
        else:
            for _ in range(count):
                self.value(item, keep=False)
        return None


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse ``path``'s header and tensor table (no tensor data is read); a damaged file is a ``ModelError``.

    The error says what is wrong: not a GGUF file, an unreadable version, a header cut short, or tensor data
    shorter than the table says (a truncated download or copy).
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        magic = handle.read(4)
        if magic != b"GGUF":
            raise ModelError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); pass a "
                             ".gguf file (llama.cpp's format)")
        if size < 24:
            raise ModelError(f"{path} is truncated ({size} bytes, shorter than a GGUF header); copy or "
                             "download it again")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as blob:
            cursor = _Cursor(blob)
            cursor.pos = 4
            version, tensor_count, kv_count = cursor.take("IQQ")
            if version not in _VERSIONS:
                raise ModelError(f"{path} is GGUF version {version}; transformers reads versions "
                                 f"{' and '.join(map(str, _VERSIONS))}: convert the model again with a "
                                 "current llama.cpp")
            try:
                meta = {}
                for _ in range(kv_count):
                    key = cursor.string()
                    kept = cursor.value(cursor.take("I"), keep=key in _KEEP)
                    if key in _KEEP:
                        meta[key] = kept
                types: Counter[str] = Counter()
                ends = [0]
                for _ in range(tensor_count):
                    cursor.string(keep=False)
                    dims = cursor.many(f"{cursor.take('I')}Q")
                    kind, offset = cursor.take("IQ")
                    try:
                        quant = GGMLQuantizationType(kind)
                    except ValueError:
                        raise ModelError(f"{path} holds a tensor of ggml type {kind}, which the installed "
                                         "gguf package does not know; pip install -U gguf") from None
                    block, block_bytes = GGML_QUANT_SIZES[quant]
                    elements = math.prod(dims)
                    types[quant.name] += 1
                    ends.append(offset + elements // block * block_bytes)
            except (struct.error, UnicodeDecodeError) as err:
                raise ModelError(f"{path} is truncated or damaged: its header cannot be read ({err}); copy "
                                 "or download it again") from None
    alignment = meta.get("general.alignment") or 32
    needed = -(-cursor.pos // alignment) * alignment + max(ends)
    if size < needed:
        raise ModelError(f"{path} is truncated: it has {size} bytes but its tensors need {needed}; copy or "
                         "download it again")
    if not isinstance(meta.get("general.architecture"), str):
        raise ModelError(f"{path} names no architecture (general.architecture); it cannot be loaded as a "
                         "model")
    architecture, name = meta["general.architecture"], meta.get("general.name")
    special = {role: meta[key] for role, key in _SPECIAL_IDS.items() if isinstance(meta.get(key), int)}
    return GGUFHeader(path, version, architecture, name, dict(types), needed, special)


def supported_architectures() -> set[str]:
    """The GGUF architecture names the installed transformers can load."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # metadata groups, not models
    try:  # the architectures of transformers' newer GGUF loader (5.24+)
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS
    except ImportError:
        return names
    return names | set(GGUF_ARCHS)


def gguf_path(name_or_path: str | os.PathLike, gguf_file: str | None = None) -> Path | None:
    """The GGUF file a model source names, or ``None`` when it names none.

    A source names a GGUF when it ends in ``.gguf``, or when ``gguf_file`` (a file name inside the directory
    ``name_or_path``) is given. A GGUF that does not exist is a ``ModelError``, never a hub lookup.
    """
    name = os.fspath(name_or_path)
    if gguf_file:
        if name.lower().endswith(".gguf"):
            raise ModelError(f"model.gguf_file={gguf_file} is set but model.name_or_path={name} is already a "
                             ".gguf file; set only one of them")
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model.gguf_file={gguf_file} needs model.name_or_path to be the local "
                             f"directory that holds it, and {name} is not a directory")
        path = folder / gguf_file
    elif name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
    else:
        return None
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist (resolved to {path.resolve()}); pass the path of "
                         "a .gguf file")
    return path


def check_gguf(path: Path) -> GGUFHeader:
    """``read_header``, plus: gguf and accelerate are installed, transformers loads the architecture."""
    for package in ("gguf", "accelerate"):  # transformers dequantises through gguf, and requires accelerate
        try:
            __import__(package)
        except ImportError:
            raise ModelError(f"reading {path} needs the {package} package, which is not installed; "
                             f"{INSTALL_HINT}") from None
    header = read_header(path)
    known = supported_architectures()
    if header.architecture not in known:
        import transformers

        raise ModelError(f"{path} is a '{header.architecture}' model, an architecture transformers "
                         f"{transformers.__version__} cannot load from GGUF; it can: "
                         f"{', '.join(sorted(known))}")
    return header


def load_gguf_tokenizer(path: Path, **kwargs) -> PreTrainedTokenizerBase:
    """The tokenizer (and chat template) a checked GGUF describes; ``kwargs`` go to ``from_pretrained``.

    Its BOS, EOS, pad and unknown tokens are the ones the file names by id: transformers 5.13's byte-level
    converter took the EOS token from the BOS id (and set no pad), so a chat model would never end its turn.
    """
    header = check_gguf(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
    for role, token_id in header.special_ids.items():
        token = tokenizer.convert_ids_to_tokens(token_id) if 0 <= token_id < len(tokenizer) else None
        if token is not None and getattr(tokenizer, role) != token:
            setattr(tokenizer, role, token)
    return tokenizer


def load_gguf_model(path: Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A GGUF's causal LM, dequantised, as an ordinary model in ``dtype`` (``save_pretrained`` takes it)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    header = check_gguf(path)
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelError(f"{path} holds a '{header.architecture}' model ({type(config).__name__}), which is "
                         "not a causal LM; grouprl trains decoder-only language models")
    kwargs = {}
    try:  # transformers 5.24+ can keep GGUF blocks packed; the copy below needs plain float tensors
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    packed = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, config=config,
                                                  dtype=torch.float32, **kwargs)
    plain_config = copy.deepcopy(packed.config)
    if hasattr(plain_config, "quantization_config"):
        del plain_config.quantization_config
    with torch.random.fork_rng(devices=[]):  # from_config's random init must not move the caller's RNG
        model = AutoModelForCausalLM.from_config(plain_config, dtype=dtype)
    model.load_state_dict(packed.state_dict())
    model.generation_config = copy.deepcopy(packed.generation_config)
    del packed
    return model.eval()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: str = "float32",
                 source: dict | None = None) -> Path:
    """Write the GGUF at ``path`` as a HF directory at ``out_dir``: config, weights, tokenizer, chat template.

    The directory is written beside its final place and renamed into it, so it is either complete or absent;
    an existing ``out_dir`` is refused. ``source`` (where the GGUF came from) is added to
    ``grouprl_source.json``.
    """
    path, out = Path(path), Path(out_dir)
    if dtype not in FLOAT_DTYPES:
        raise ModelError(f"dtype {dtype}: choose one of {', '.join(FLOAT_DTYPES)}")
    if out.exists():
        raise ModelError(f"{out} already exists; choose a new output directory or remove it")
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist (resolved to {path.resolve()})")
    header = check_gguf(path)
    staging = out.parent / f".tmp-{out.name}-{os.getpid()}"
    try:  # before the (slow) load: a place that cannot be written fails at once
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as err:
        raise ModelError(f"cannot write {out} ({err.strerror or err}); choose a directory you can "
                         "write") from None
    try:
        model = load_gguf_model(path, FLOAT_DTYPES[dtype])
        tokenizer = load_gguf_tokenizer(path)
        import transformers

        record = {"gguf_file": path.name, "sha256": sha256_file(path), "architecture": header.architecture,
                  "name": header.name, "tensor_types": header.tensor_types, "dtype": dtype,
                  "transformers": transformers.__version__, "gguf": version("gguf"),
                  **(source or {})}
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        except OSError as err:
            raise ModelError(f"writing {out} failed ({err.strerror or err}); free some space or choose "
                             "another directory") from None
        try:
            os.rename(staging, out)
        except OSError as err:
            raise ModelError(f"cannot move the converted model into {out} ({err.strerror}); another process "
                             "may have written it meanwhile: remove it or choose another directory") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out

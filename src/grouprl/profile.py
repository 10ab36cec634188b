"""``grouprl bench --profile``: where a training step's time goes, by phase and by op family, against each
phase's floor.

Phases: ``generate`` (the rollout backend), ``reference`` (π_ref, only with β > 0), ``old`` (π_old, only
off-policy or when the spec needs it), ``update`` (forward/backward of every micro-batch) and ``optimizer``
(gradient clipping and the AdamW step). Each is timed by wrapping the function the loop calls for it (the
backend's ``generate``, ``frozen_logprobs``, the reference's ``logprobs``, ``accumulate_gradients``,
``clip_gradients`` and ``optimizer.step``) in a ``torch.profiler.record_function`` range; the wrappers are
removed when the profile ends.

Op families come from the profiler's CPU events, aggregated as ``key_averages`` does (self time per op), each
op's self time given to the family of its outermost ``aten`` ancestor, so that the ``mm`` inside a ``linear``
counts once, as a GEMM:

* ``gemm``: ``mm``/``addmm``/``bmm``/``matmul``/``linear`` and their backward, but the LM head's;
* ``lm_head``: the GEMMs with a vocabulary-sized dimension, and the (log-)softmax, log-sum-exp and gather
  around them (the sampler's softmax too);
* ``attention``: ``scaled_dot_product_attention`` and its kernels, forward and backward;
* ``optimizer``: every op of the optimizer phase, and ``_foreach_*`` / fused AdamW anywhere;
* ``elementwise``: every other ``aten`` op (norms, rotary, activations, residual adds, copies, indexing);
* ``other``: the phase's wall time not spent inside an ``aten`` op: Python, autograd's bookkeeping, the
  profiler's own cost.

Floors: the phase's nominal FLOPs over the fp32 GEMM rate measured in the same process (``bench.gemm_gflops``,
the better of before and after the steps): 2·N per generated token, 2·N per scored token of a frozen pass,
6·N per trained token, N the parameters that multiply (an untied input embedding is a lookup and left out).
The tokens counted are the ones a pass must run: each group's prompt once (prompts are shared per group)
plus the completions' real tokens, not padding, so padding and repeated prompts show as lost fraction. The
optimizer's floor is memory traffic: fused AdamW reads parameter, gradient and two moments and writes three
of them, 28 bytes per float32 parameter, over the copy bandwidth measured the same way.

The profiler adds a few microseconds per op; phase seconds are those of the profiled steps.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grouprl.errors import ModelError

SHAPES = {
    # SmolLM2-135M's architecture with random weights and the char tokenizer
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, intermediate_size=1536, vocab_size=49152,
                         tie_word_embeddings=True, max_position_embeddings=2048),
}
PHASES = ("generate", "reference", "old", "update", "optimizer")
TOP_OPS = 12
FAMILIES = ("gemm", "lm_head", "attention", "elementwise", "optimizer", "other")
_GEMM = {"mm", "addmm", "bmm", "matmul", "linear", "baddbmm", "addmv", "mv"}
_SOFTMAX = {"logsumexp", "log_softmax", "_log_softmax", "softmax", "_softmax", "gather", "scatter",
            "_log_softmax_backward_data", "_softmax_backward_data", "scatter_add"}


def check_causal_lm(path: str) -> None:
    """Raise ``ModelError`` (one line) unless ``path`` is a directory whose config is a causal LM's."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    p = Path(path)
    if p.suffix == ".gguf" and p.is_file():
        return
    if not (p / "config.json").is_file():
        raise ModelError(f"bench --model {path}: not a model directory (no config.json); give an HF "
                         "directory or .gguf file, or one of default, tiny, small, " + ", ".join(SHAPES))
    try:
        model_type = AutoConfig.from_pretrained(p).model_type
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"bench --model {path}: its config.json cannot be read "
                         f"({str(err).strip().splitlines()[0]}); give a causal LM's directory") from None
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(f"bench --model {path}: a {model_type!r} model is not a causal LM; give a decoder "
                         "such as Llama, Qwen2 or Mistral")


def model_source(name: str, root: Path) -> str:
    """``model.name_or_path`` for ``--model``: a bench config or shape written under ``root``, ``default``,
    or a checked local path."""
    from grouprl import bench

    if name in bench.CONFIGS:
        return str(bench.make_model_dir(name, root))
    if name in SHAPES:
        from transformers import LlamaConfig, LlamaForCausalLM

        from grouprl.model import build_char_tokenizer
        from grouprl.model.configs import BOS_ID, EOS_ID, PAD_ID

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[name], pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                                             eos_token_id=EOS_ID))
        path = root / name
        model.save_pretrained(path)
        build_char_tokenizer().save_pretrained(path)
        return str(path)
    if name == "default":
        return name
    check_causal_lm(name)
    return name


def copy_gbytes_per_s(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Memory bandwidth of a large float32 copy (bytes read + written per second, best of ``repeats``)."""
    a = torch.randn(n_bytes // 4, device="cpu")
    b = torch.empty_like(a)
    b.copy_(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best / 1e9


@dataclass
class Recorder:
    """Wall seconds per phase of the current step, each phase also a profiler range ``phase::NAME``."""

    seconds: dict[str, float] = field(default_factory=dict)
    tokens_run: dict[str, int] = field(default_factory=dict)  # token positions the passes ran, padding too
    autocast: torch.dtype | None = None
    phase: str = "outside"

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            t0, outer = time.perf_counter(), self.phase
            cast = (torch.autocast("cpu", dtype=self.autocast)
                    if self.autocast is not None and phase != "optimizer" else contextlib.nullcontext())
            self.phase = phase
            try:
                with torch.profiler.record_function(f"phase::{phase}"), cast:
                    out = fn(*args, **kwargs)
            finally:
                self.phase = outer
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
            return out

        return timed

    def count(self, fn, *tensors: str):
        """``fn`` that adds the sizes of its arguments named ``tensors`` to ``tokens_run`` of the phase."""
        names = list(inspect.signature(fn).parameters)

        def counted(*args, **kwargs):
            bound = dict(zip(names, args)) | kwargs
            run = sum(bound[t].numel() for t in tensors)
            self.tokens_run[self.phase] = self.tokens_run.get(self.phase, 0) + run
            return fn(*args, **kwargs)

        return counted


@contextlib.contextmanager
def instrumented(setup, recorder: Recorder):
    """Wrap the functions the loop calls for each phase; undo on exit."""
    from grouprl.model import passes
    from grouprl.train import loop
    from grouprl.train import step as stages

    patches = [(setup.backend, "generate", "generate"), (loop, "frozen_logprobs", "old"),
               (stages, "accumulate_gradients", "update"), (stages, "clip_gradients", "optimizer"),
               (setup.optimizer, "step", "optimizer")]
    if setup.reference is not None:
        patches.append((setup.reference, "logprobs", "reference"))
    counts = [(passes, "sequence_logprobs", ("input_ids",)),
              (passes, "shared_prompt_logprobs", ("prompt_ids", "completion_ids"))]
    saved = [(obj, name, obj.__dict__.get(name, _MISSING)) for obj, name, *_ in patches + counts]
    try:
        for obj, name, phase in patches:
            setattr(obj, name, recorder.wrap(phase, getattr(obj, name)))
        for obj, name, tensors in counts:
            setattr(obj, name, recorder.count(getattr(obj, name), *tensors))
        yield
    finally:
        for obj, name, old in saved:
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


_MISSING = object()


def _family(name: str, shapes, vocab: int) -> str:
    """The op family of an ``aten`` op (see the module docstring)."""
    op = name.split("::", 1)[-1]
    if op.startswith("_foreach") or "adam" in op:
        return "optimizer"
    if "scaled_dot_product" in op or "flash_attention" in op:
        return "attention"
    if op in _SOFTMAX:
        return "lm_head"
    if op in _GEMM:
        return "lm_head" if any(vocab in s for s in shapes() if isinstance(s, list | tuple)) else "gemm"
    return "elementwise"


def events_of(prof) -> list:
    """The profiler's CPU events as ``(start_ns, end_ns, thread, name, shapes)``, ``shapes`` a callable
    (read only for the few ops that need it: building the profiler's own event tree takes minutes for the
    million events of a 135 M model's step)."""
    return [(e.start_ns(), e.end_ns(), e.start_thread_id(), e.name(), e.shapes)
            for e in prof.profiler.kineto_results.events() if str(e.device_type()).endswith("CPU")]


def op_families(events: list, vocab: int) -> dict[str, dict[str, float]]:
    """Self seconds by phase and family from ``events_of``; ops outside every ``phase::`` range go to
    ``outside``. Nesting is rebuilt per thread from the time ranges; an ``aten`` op inside another ``aten`` op
    takes that op's family, so a ``linear``'s ``mm`` counts as what the ``linear`` is."""
    out: dict[str, dict[str, float]] = {}

    def close(entry: list) -> None:  # entry: [end, name, family, phase, duration, children]
        if entry[2] is not None:
            fams = out.setdefault(entry[3], {})
            fams[entry[2]] = fams.get(entry[2], 0.0) + (entry[4] - entry[5]) / 1e9
            ops = top.setdefault(entry[3], {})
            ops[entry[1]] = ops.get(entry[1], 0.0) + (entry[4] - entry[5]) / 1e9

    top: dict[str, dict[str, float]] = {}

    for thread in {e[2] for e in events}:
        stack: list[list] = []
        for start, end, _, name, shapes in sorted((e for e in events if e[2] == thread),
                                                  key=lambda e: (e[0], -e[1])):
            while stack and stack[-1][0] <= start:
                close(stack.pop())
            parent = stack[-1] if stack else None
            phase = parent[3] if parent else "outside"
            if name.startswith("phase::"):  # a range, not an op: no time of its own
                stack.append([end, name, None, name.split("::", 1)[1], 0, 0])
                continue
            if parent is not None and parent[2] is not None:
                parent[5] += end - start
            if phase == "optimizer":
                family = "optimizer"
            elif not name.startswith("aten::"):
                family = "other"  # autograd nodes, annotations: Python and bookkeeping around ops
            elif parent is not None and parent[1].startswith("aten::"):
                family = parent[2]
            else:
                family = _family(name, shapes, vocab)
            stack.append([end, name, family, phase, end - start, 0])
        while stack:
            close(stack.pop())
    for phase, ops in top.items():  # the ops of most self time, for the report
        out[phase]["top_ops"] = dict(sorted(ops.items(), key=lambda kv: -kv[1])[:TOP_OPS])
    return out


def _multiplying_params(model: torch.nn.Module) -> int:
    params = {id(p): p.numel() for p in model.parameters()}
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is not None and (outp is None or inp.weight is not outp.weight):
        params.pop(id(inp.weight), None)
    return sum(params.values())


def step_floors(setup, batch, n_params: int, gemm: float, copy_bw: float) -> dict[str, float]:
    """Seconds at the floor for each phase that ran (module docstring)."""
    cfg, r = setup.cfg, batch.rollout
    G = cfg.rollout.num_generations
    generated = int(r.completion_mask.sum())
    prompts = int(r.prompt_mask[::G].sum())  # each group's prompt once
    scored = prompts + generated
    mu = cfg.train.num_iterations
    rate = gemm * 1e9
    trainable = sum(p.numel() for p in setup.policy.parameters() if p.requires_grad)
    return {"generate": 2 * n_params * scored / rate, "reference": 2 * n_params * scored / rate,
            "old": 2 * n_params * scored / rate, "update": 6 * n_params * scored * mu / rate,
            "optimizer": 28 * trainable * mu * cfg.train.mini_batches / (copy_bw * 1e9)}


def run_profile(model: str, steps: int, warmup: int, overrides: tuple[str, ...] = (),
                autocast: str | None = None, trace: bool = True) -> dict:
    """Profile ``steps`` training steps after ``warmup`` on ``model`` (see ``model_source``)."""
    from grouprl import bench
    from grouprl.config import load_config
    from grouprl.train.loop import sample_batch, update
    from grouprl.train.setup import build

    new_tokens = bench.CONFIGS[model]["max_new_tokens"] if model in bench.CONFIGS else 64
    cast = {"bf16": torch.bfloat16, None: None}[autocast]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"model.name_or_path={model_source(model, Path(tmp))}", "algorithm=grpo",
                                 "algo.beta=0.04", "train.prompts_per_step=8", "rollout.num_generations=8",
                                 f"rollout.max_new_tokens={new_tokens}", "data.num_eval=0",
                                 "data.num_train=512", "train.num_iterations=1", *overrides])
        setup = build(cfg, Path(tmp) / "run")
        n_params = _multiplying_params(setup.policy)
        vocab = setup.policy.get_output_embeddings().weight.shape[0]
        gemm, copy_bw = bench.gemm_gflops(), copy_gbytes_per_s()
        rec = Recorder(autocast=cast)
        rows, profiles = [], []
        with instrumented(setup, rec):
            for step in range(1, warmup + steps + 1):
                rec.seconds, rec.tokens_run = {}, {}
                measured = step > warmup
                prof = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                               record_shapes=True)
                        if measured and trace else contextlib.nullcontext())
                with prof, warnings.catch_warnings():
                    # the wrapped optimizer.step makes the LR scheduler think step was overridden
                    warnings.filterwarnings("ignore", re.escape("Seems like `optimizer.step()`"))
                    t0 = time.perf_counter()
                    batch, _ = sample_batch(setup, step)
                    batch, _ = update(setup, batch, step)
                    elapsed = time.perf_counter() - t0  # the profiler's processing at exit left out
                if not measured:
                    continue
                rows.append({"step": elapsed, **rec.seconds, "_batch": batch,
                             "_run": dict(rec.tokens_run)})
                rec.tokens_run = {}
                if trace:
                    profiles.append(_phase_families(prof, vocab, rec.seconds))
        gemm, copy_bw = max(gemm, bench.gemm_gflops()), max(copy_bw, copy_gbytes_per_s())
        floors = [step_floors(setup, r["_batch"], n_params, gemm, copy_bw) for r in rows]
        for r in rows:  # real tokens of one pass: each group's prompt once, the completions' tokens
            batch, G = r.pop("_batch"), cfg.rollout.num_generations
            real = int(batch.rollout.prompt_mask[::G].sum() + batch.rollout.completion_mask.sum())
            r["_padding"] = {p: 1 - real * _passes(cfg, p) / n for p, n in r.pop("_run").items()}
        new_tokens = cfg.rollout.max_new_tokens
    return _summary(model, rows, floors, profiles, gemm, copy_bw, n_params, autocast, new_tokens)


def _passes(cfg, phase: str) -> int:
    """Passes over the whole batch a phase makes: the update one per iteration, a frozen pass one."""
    return cfg.train.num_iterations if phase == "update" else 1


def _phase_families(prof, vocab: int, seconds: dict[str, float]) -> dict[str, dict[str, float]]:
    fams = op_families(events_of(prof), vocab)
    for phase, wall in seconds.items():  # wall time not inside any aten op: Python, autograd, profiler
        f = fams.setdefault(phase, {})
        spent = sum(v for k, v in f.items() if k in FAMILIES)
        f["other"] = f.get("other", 0.0) + max(0.0, wall - spent)
    return fams


def _summary(model, rows, floors, profiles, gemm, copy_bw, n_params, autocast, new_tokens) -> dict:
    med = lambda xs: statistics.median(xs) if xs else 0.0  # noqa: E731
    phases = {}
    for p in PHASES:
        secs = med([r.get(p, 0.0) for r in rows])
        if secs == 0.0:
            continue
        floor = med([f[p] for f in floors])
        fams = {k: med([pr.get(p, {}).get(k, 0.0) for pr in profiles]) for k in FAMILIES} if profiles else {}
        phases[p] = {"seconds": secs, "floor_s": floor, "fraction_of_floor": floor / secs, "families": fams}
        if profiles:
            phases[p]["top_ops"] = profiles[-1].get(p, {}).get("top_ops", {})
        if any(p in r["_padding"] for r in rows):
            # the share of the positions run that were padding or repeated prompts
            phases[p]["padding"] = med([r["_padding"].get(p, 0.0) for r in rows])
    step = med([r["step"] for r in rows])
    floor_total = sum(v["floor_s"] for v in phases.values())
    outside = step - sum(v["seconds"] for v in phases.values())  # prompts, rewards, advantages, metrics
    return {"model": model, "params_multiplying": n_params, "steps": len(rows), "max_new_tokens": new_tokens,
            "sec_per_step": step, "phases": phases, "outside_phases_s": outside,
            "floor_s": floor_total, "fraction_of_floor": floor_total / step, "gemm_gflops": gemm,
            "copy_gbytes_per_s": copy_bw, "autocast": autocast, "threads": torch.get_num_threads()}


def render(d: dict) -> str:
    lines = [f"{d['model']}: {d['params_multiplying'] / 1e6:.1f} M multiplying params, {d['steps']} step(s), "
             f"GEMM {d['gemm_gflops']:.0f} GFLOP/s, copy {d['copy_gbytes_per_s']:.1f} GB/s, "
             f"{d['threads']} threads" + (f", autocast {d['autocast']}" if d["autocast"] else ""),
             f"  step {d['sec_per_step']:.2f} s, floor {d['floor_s']:.2f} s "
             f"({100 * d['fraction_of_floor']:.0f}% of floor); "
             f"outside the phases {d['outside_phases_s']:.2f} s",
             f"  {'phase':<10}{'seconds':>9}{'floor':>8}{'of floor':>9}   "
             + "".join(f"{f:>12}" for f in FAMILIES)]
    for name, p in d["phases"].items():
        fams = "".join(f"{p['families'].get(f, 0.0):>12.2f}" for f in FAMILIES) if p["families"] else ""
        pad = f"   padding {100 * p['padding']:.0f}%" if "padding" in p else ""
        lines.append(f"  {name:<10}{p['seconds']:>9.2f}{p['floor_s']:>8.2f}"
                     f"{100 * p['fraction_of_floor']:>8.0f}%   {fams}{pad}")
    return "\n".join(lines)


def main(args) -> int:
    d = run_profile(args.model or args.config, args.steps, args.warmup, tuple(args.overrides),
                    autocast=args.autocast)
    if not args.json:
        print(render(d))
    print(json.dumps(d))
    return 0

"""``grouprl`` command line: one subcommand per task (``grouprl --help`` lists them, one line each).

Every user-facing failure (a ``grouprl.errors.UserError``) is one line on stderr (what, where, how to fix)
and exit status 2; ``--debug`` shows the traceback instead. Anything else is a bug: its traceback, one line
saying so, and exit status 1. Under ``torchrun`` a rank whose peer died or hung prints one line naming itself
and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from grouprl.errors import UserError

EXIT_USAGE = 2


def _collective_failure() -> type[BaseException]:
    from grouprl.distributed import CollectiveFailure

    return CollectiveFailure


def _run_dir(cfg, command: str) -> Path:
    if cfg.output.run_dir:
        return Path(cfg.output.run_dir)
    return Path("runs") / f"{command}-{cfg.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    from grouprl.config import load_config
    from grouprl.logging.report import write_report
    from grouprl.train.loop import train
    from grouprl.train.rundir import hold_run_dir

    cfg = load_config(args.config, args.overrides)
    run_dir = _run_dir(cfg, "train")
    if args.resume and args.resume == "auto" and not cfg.output.run_dir:
        raise UserError("--resume auto needs the run's directory: add output.run_dir=runs/<run>")
    with hold_run_dir(run_dir):  # first: a live run's directory is "in use", not "already holds a run"
        if not args.resume and (run_dir / "metrics.jsonl").exists():
            raise UserError(f"run directory {run_dir} already holds a run; continue it with --resume auto, "
                            "or choose another output.run_dir")
        result = train(cfg, run_dir, resume=args.resume)
    if result.get("finished") or result.get("interrupted") or not result.get("main", True):
        return 0
    if cfg.output.plots:
        write_report(run_dir)
    before, after = result["before"].get("eval/pass@1"), result["after"].get("eval/pass@1")
    if before is not None and after is not None:
        print(f"held-out pass@1 (greedy): {before:.3f} -> {after:.3f} "
              f"({100 * (after - before):+.1f} points); run directory: {run_dir}")
    return 0


def _other_settings(spec) -> str:
    """The fields a preset sets away from the defaults, read by its pieces, beyond the listed columns."""
    import dataclasses

    from grouprl.algo import REGISTRIES, AlgoSpec
    from grouprl.algo.presets import fields_read

    shown = {"name", "paper", "summary", "advantage", "importance_sampling_level", "clip", "epsilon_low",
             "epsilon_high", "loss_type", "filters", "shaping", "beta", "kl_estimator"}
    default = AlgoSpec()
    # a token selection's settings (and those of the objective that names it) are always shown
    pieces = [("selection", n) for n in spec.acting("selection")]
    pieces += [("objective", spec.clip)] if pieces and "selection" in spec.info("objective") else []
    selecting = {field for kind, name in pieces for field in fields_read(REGISTRIES[kind].info(name))
                 if getattr(spec, field) is not None}
    other = [f"{f.name}={getattr(spec, f.name)}" for f in dataclasses.fields(AlgoSpec)
             if f.name not in shown and spec.reads(f.name)
             and (getattr(spec, f.name) != getattr(default, f.name) or f.name in selecting)]
    return " ".join(other) or "-"


def cmd_list(args) -> int:
    from grouprl.algo import PRESETS
    from grouprl.data.tasks import TASKS
    from grouprl.rewards import REWARDS

    if args.what == "algorithms":
        print(f"{'name':<22} {'paper':<11} {'advantage':<21} {'ratio':<15} {'clip':<15} {'eps':<13} "
              f"{'aggregation':<24} {'filters':<18} {'shaping':<14} {'kl':<28} other settings")
        for spec in PRESETS.values():
            eps = f"{spec.epsilon_low}/{spec.epsilon_high}" if spec.reads("epsilon_high") else "-"
            kl = f"{spec.kl_estimator} beta={spec.beta} in the {'loss' if spec.kl_in_loss else 'reward'}" \
                if spec.beta else "none"
            filters, shaping = ",".join(spec.filters) or "none", ",".join(spec.shaping) or "none"
            print(f"{spec.name:<22} {spec.paper:<11} {spec.advantage:<21} "
                  f"{spec.importance_sampling_level:<15} {spec.clip:<15} {eps:<13} {spec.loss_type:<24} "
                  f"{filters:<18} {shaping:<14} {kl:<28} {_other_settings(spec)}")
    elif args.what == "tasks":
        for name in TASKS.names():
            print(f"{name:<14} {(TASKS.get(name).__doc__ or '').strip().splitlines()[0]}")
    else:
        for name in REWARDS.names():
            kind = " (factory_kwargs)" if REWARDS.info(name).get("factory") else ""
            print(f"{name:<24} {(REWARDS.get(name).__doc__ or '').strip().splitlines()[0]}{kind}")
    return 0


def cmd_eval(args) -> int:
    from grouprl.config import load_config
    from grouprl.train.evaluation import run_eval
    from grouprl.train.setup import build

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.name_or_path={args.model}")
    cfg = load_config(args.config, overrides)
    run_dir = _run_dir(cfg, "eval")
    setup = build(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        out = run_eval(setup, 0)
    finally:
        setup.close()
    for key, value in out.items():
        print(f"{key:<20} {value:.4f}" if isinstance(value, float) else f"{key:<20} {value}")
    return 0


def _existing_run(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir} is not a run directory (no metrics.jsonl); pass the directory grouprl "
                        "train wrote")
    return run_dir


def cmd_report(args) -> int:
    from grouprl.logging.report import write_report

    print(write_report(_existing_run(args.run_dir)))
    return 0


def cmd_show(args) -> int:
    """A readable table of sampled completions with their rewards and advantages; an episode's trajectory
    one message a line."""
    from rich.console import Console
    from rich.table import Table

    from grouprl.logging.completions import render_completion
    from grouprl.logging.report import read_jsonl

    rows = read_jsonl(_existing_run(args.run_dir) / "completions.jsonl")
    if not rows:
        raise UserError(f"{args.run_dir} has no completions (output.log_completions was 0)")
    last = rows[-1]["step"]
    step = args.step if args.step is not None else last
    rows = [r for r in rows if r["step"] == step]
    if not rows:
        raise UserError(f"no completions logged at step {step}; choose --step between 1 and {last}")
    parts = sorted(k for k in rows[0] if k.startswith(("reward/", "episode/")))
    table = Table(title=f"{args.run_dir} — step {step}")
    for column in ("prompt", "completion", "reward", "advantage", *parts):
        table.add_column(column, overflow="fold")
    for r in rows[: args.limit]:
        table.add_row(str(r["prompt"]), render_completion(r["completion"]), f"{r['reward']:.3f}",
                      f"{r['advantage']:+.3f}",
                      *(f"{r[p]:.3f}" if isinstance(r[p], float) else str(r[p]) for p in parts))
    Console().print(table)
    return 0


def cmd_compare(args) -> int:
    from grouprl.algo import PRESETS
    from grouprl.compare import run_arms, write_report

    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = [a for a in algorithms if a not in PRESETS]
    if unknown or not algorithms:
        raise UserError(f"--algorithms: unknown {', '.join(unknown) or '(none given)'}; "
                        f"known: {', '.join(PRESETS)}")
    if args.seeds < 1 or args.budget_steps < 1:
        raise UserError("--seeds and --budget-steps must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_arms(algorithms, args.seeds, args.budget_steps, out, args.config, list(args.overrides),
             say=lambda text: print(text, file=sys.stderr))
    command = " ".join(["grouprl", "compare", *sys.argv[2:]]) if sys.argv[1:2] == ["compare"] \
        else "grouprl compare"
    print(write_report(algorithms, args.seeds, args.budget_steps, out, command))
    return 0


def cmd_env(args) -> int:
    """Versions and machine facts for bug reports."""
    import importlib.metadata as md
    import os
    import platform

    import torch

    print(f"grouprl        {md.version('grouprl')}")
    print(f"python         {platform.python_version()} ({platform.platform()})")
    for package in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "trl", "peft", "datasets",
                    "math-verify", "tensorboard"):
        try:
            print(f"{package:<14} {md.version(package)}")
        except md.PackageNotFoundError:
            print(f"{package:<14} not installed")
    print(f"cpus           {os.cpu_count()} (torch threads {torch.get_num_threads()})")
    print(f"cuda           {torch.cuda.is_available()} ({torch.cuda.device_count()} devices)")
    return 0


def cmd_sft(args) -> int:
    from grouprl.cli.sft import run_sft

    return run_sft(args)


def cmd_config(args) -> int:
    """The resolved config as YAML, each key under its documentation."""
    from grouprl.config import load_config
    from grouprl.config.describe import render

    overrides = [*([f"algorithm={args.algorithm}"] if args.algorithm else []), *args.overrides]
    print(render(load_config(args.config, overrides)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from grouprl import __version__

    parser = argparse.ArgumentParser(
        prog="grouprl",
        description="Critic-free, group-relative RL (GRPO and its successors) for causal LMs.",
        epilog="grouprl COMMAND --help shows a command's options; grouprl config lists every config key.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"grouprl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    train = sub.add_parser("train", help="RL-train a model (no arguments: the embedded default with grpo)",
                           epilog="Every key, its default and its meaning: grouprl config "
                                  "[--algorithm X]. TRL's GRPOConfig names work as keys too "
                                  "(learning_rate=1e-6): docs/trl.md.")
    train.add_argument("--config",
                       help="a YAML config file (grouprl keys or TRL/open-r1 names; see configs/)")
    train.add_argument("--resume", metavar="auto|PATH",
                       help="continue from the newest checkpoint of output.run_dir (auto) or from PATH")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. algorithm=dapo train.lr=1e-5 "
                       "(list the keys with grouprl config)")
    train.set_defaults(fn=cmd_train)

    config = sub.add_parser("config",
                            help="print the resolved config as YAML, every key with its documentation")
    config.add_argument("--algorithm", help="the preset to resolve (grouprl list algorithms)")
    config.add_argument("--config", help="a YAML config file to resolve instead of the defaults")
    config.add_argument("overrides", nargs="*", help="key=value overrides, as for train")
    config.set_defaults(fn=cmd_config)

    ev = sub.add_parser("eval", help="held-out pass@1 (greedy), pass@k and mean@k (sampled)")
    ev.add_argument("--config", help="a YAML config file")
    ev.add_argument("--model", help="model directory or hub id (default: the config's)")
    ev.add_argument("overrides", nargs="*", help="key=value overrides, as for train")
    ev.set_defaults(fn=cmd_eval)

    sft = sub.add_parser("sft", help="supervised warm start from noisy demonstrations (how the embedded "
                         "defaults are made)")
    from grouprl.cli.sft import add_arguments

    add_arguments(sft)
    sft.set_defaults(fn=cmd_sft)

    bench = sub.add_parser("bench", help="seconds per step by phase, tokens/s, FLOP/s and peak memory")
    bench.add_argument("--config", default="tiny", help="tiny | small | medium | smollm2-135m")
    bench.add_argument("--steps", type=int, default=5, help="measured steps after warm-up")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--json", action="store_true", help="print only the JSON result line")
    bench.add_argument("--vs-trl", action="store_true", help="also run TRL's GRPOTrainer side by side")
    bench.add_argument("--rounds", type=int, default=2, help="with --vs-trl: alternations of the two sides")
    bench.add_argument("--trl-only", action="store_true", help=argparse.SUPPRESS)
    bench.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (model.device)")
    bench.add_argument("--profile", action="store_true",
                       help="seconds per phase and per op family, against each phase's floor")
    bench.add_argument("--model", default=None,
                       help="an HF directory or .gguf, default, tiny, small or smollm2-135m "
                       "(implies --profile)")
    bench.add_argument("--autocast", choices=["bf16"], default=None,
                       help="with --profile: run generate and update under torch.autocast (measurement only)")
    bench.add_argument("overrides", nargs="*", help="extra config overrides")
    bench.set_defaults(fn=lambda args: __import__("grouprl.bench", fromlist=["main"]).main(args))

    report = sub.add_parser("report", help="regenerate a run's plots and report.md from its metrics.jsonl")
    report.add_argument("run_dir")
    report.set_defaults(fn=cmd_report)

    show = sub.add_parser("show", help="print a run's sampled completions with rewards and advantages")
    show.add_argument("run_dir")
    show.add_argument("--step", type=int, help="the step to show (default: the last logged)")
    show.add_argument("--limit", type=int, default=32, help="rows to print")
    show.set_defaults(fn=cmd_show)

    compare = sub.add_parser("compare", help="several algorithms, same task, seeds and budget; one report")
    compare.add_argument("--algorithms", default="grpo,dr_grpo,dapo,gspo,gmpo,gfpo,lite_ppo")
    compare.add_argument("--seeds", type=int, default=2)
    compare.add_argument("--budget-steps", type=int, default=100)
    compare.add_argument("--out", default="runs/compare", help="directory for the arms and the report")
    compare.add_argument("--config")
    compare.add_argument("overrides", nargs="*", help="key=value overrides applied to every arm")
    compare.set_defaults(fn=cmd_compare)

    from grouprl.cli.models import add_commands as add_model_commands

    add_model_commands(sub)

    env = sub.add_parser("env", help="print versions for bug reports")
    env.set_defaults(fn=cmd_env)

    ls = sub.add_parser("list", help="list algorithms, tasks or rewards")
    ls.add_argument("what", choices=["algorithms", "tasks", "rewards"])
    ls.set_defaults(fn=cmd_list)
    return parser


def _quiet_libraries() -> None:
    """transformers' per-load progress bars and advisory warnings drown the run's own output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Flags and ``key=value`` overrides in any order: ``train train.steps=3 --config x.yaml`` works too.

    argparse stops filling a ``nargs="*"`` positional at the first flag; what it left over is added to the
    overrides when it looks like one, and refused (usage error, status 2) otherwise.
    """
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if not args.debug:
        _quiet_libraries()
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("grouprl: interrupted", file=sys.stderr)
        return 130
    except _collective_failure() as err:  # a peer rank died or hung: not the user's input, so not status 2
        if args.debug:
            raise
        print(f"grouprl {args.command}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    except UserError as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"grouprl {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # not the user's input: a bug, shown with its traceback
        if args.debug:
            raise
        traceback.print_exc()
        print(f"grouprl {args.command}: internal error ({type(err).__name__}); this is a bug in grouprl or "
              "a library it calls, not in your input: please report it with the traceback above and the "
              "output of grouprl env (rerun with --debug for the raw exception)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

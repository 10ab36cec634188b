"""Rebuild the embedded default checkpoint: the same as ``grouprl sft --output src/grouprl/assets/default``.

    .venv/bin/python scripts/build_default.py
"""

import sys
from pathlib import Path

from grouprl.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
sys.exit(main(["sft", "--output", str(ROOT / "src/grouprl/assets/default"), *sys.argv[1:]]))

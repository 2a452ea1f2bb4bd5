"""Makes the repository's modules importable when a tool runs as `python tools/NAME.py`.

The one place that edits sys.path: every tool imports it first (`import _root  # noqa: F401`).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

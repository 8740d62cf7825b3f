"""Small JSON state files (the daily run's, the lake's manifest): read leniently, replaced atomically.

A missing or unreadable file reads as {} (the state is then rebuilt); a write
goes to a hidden temporary file renamed over the old one, so a reader or a
crash never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict) -> None:
    path = Path(path)
    temporary = path.with_name("." + path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)

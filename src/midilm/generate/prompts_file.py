"""Reading a JSONL file of prompts (one {"id", "prompt", ...} object per line) for batch generation."""

from __future__ import annotations

import json
from pathlib import Path


def read_prompts(path: str | Path) -> list[dict]:
    """The objects of a JSONL prompts file, in order; each has "id" and "prompt", and ids are usable as file
    names (no separators, no leading dot, no duplicates). Raises ValueError naming the line otherwise."""
    items, seen = [], set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(obj, dict) or "id" not in obj or "prompt" not in obj:
            raise ValueError(f"{path}:{n}: each line needs \"id\" and \"prompt\"")
        pid = str(obj["id"])
        if not pid or "/" in pid or "\\" in pid or pid.startswith(".") or pid in seen:
            raise ValueError(f"{path}:{n}: id {pid!r} is empty, a duplicate or not a file name")
        seen.add(pid)
        items.append(obj)
    return items

"""`midilm.json`: the one versioned description saved beside every midilm model's weights.

Every manifest holds `kind` (what the directory is, so a loader can refuse the wrong model early) and
`format_version`; the other fields belong to the kind:

  text-to-midi   music_offset, music_rows, prompt_prefix, bos_text (where the AMT block sits in the vocabulary)
  midi-llama     the projector / pooling config (models/midi_llama.py)
  abc, amt-native  token-input understanding baselines (train/understand_baselines.py)

Text-to-MIDI models saved before the format had a kind (only the four layout fields) are read as kind
"text-to-midi", format version 0, so old checkpoints keep loading.
"""

from __future__ import annotations

import json
from pathlib import Path

from midilm.errors import MidilmError

MANIFEST = "midilm.json"
FORMAT_VERSION = 1
KINDS = ("text-to-midi", "midi-llama", "abc", "amt-native")
_LEGACY_T2M_FIELDS = frozenset({"music_offset", "music_rows", "prompt_prefix", "bos_text"})


class ManifestError(MidilmError, ValueError):
    """A model directory's `midilm.json` is missing, unreadable or of the wrong kind."""


def manifest_path(directory: str | Path) -> Path:
    return Path(directory) / MANIFEST


def has_manifest(directory: str | Path) -> bool:
    return manifest_path(directory).is_file()


def read_manifest(directory: str | Path, expected_kind: str | None = None) -> dict:
    """The manifest of a model directory as a dict that always holds `kind` and `format_version`.

    Raises ManifestError when the file is missing, is not a JSON object, has no kind (and is not a legacy
    text-to-MIDI sidecar), has a format newer than this code reads, or is not `expected_kind`.
    """
    path = manifest_path(directory)
    if not path.is_file():
        raise ManifestError(f"{directory} is not a midilm model directory (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    if "kind" not in data:
        if not data or not set(data) <= _LEGACY_T2M_FIELDS or "music_offset" not in data:
            raise ManifestError(f"{path} is not a valid model description (needs a \"kind\")")
        data = {"kind": "text-to-midi", "format_version": 0, **data}
    kind = data["kind"]
    if not isinstance(kind, str):
        raise ManifestError(f"{path}: \"kind\" must be a string, got {kind!r}")
    version = data.setdefault("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {version!r} is newer than this midilm reads ({FORMAT_VERSION})")
    if expected_kind is not None and kind != expected_kind:
        raise ManifestError(f"{directory} holds a {kind!r} model, not {expected_kind!r}")
    return data


def write_manifest(directory: str | Path, kind: str, **fields) -> Path:
    """Write `midilm.json` with `kind`, `format_version` and `fields` (JSON-serialisable); returns its path."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a model kind must be a non-empty string (known kinds: {', '.join(KINDS)}), got {kind!r}")
    clash = {"kind", "format_version"} & set(fields)
    if clash:
        raise ValueError(f"{sorted(clash)} are set by write_manifest itself")
    path = manifest_path(directory)
    path.write_text(json.dumps({"kind": kind, "format_version": FORMAT_VERSION, **fields}, indent=2) + "\n")
    return path

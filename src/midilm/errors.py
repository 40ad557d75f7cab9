"""Errors a user can act on: each names the file or value at fault in one line."""

from __future__ import annotations

from pathlib import Path


class MidilmError(Exception):
    """Base class of midilm's user-facing errors; the CLI prints these as one line."""


class MidiReadError(MidilmError, ValueError):
    """A MIDI file could not be read (missing, corrupt, truncated, empty)."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"cannot read MIDI {where}{reason}")


def read_file_bytes(path: str | Path, limit: int = 64 << 20) -> bytes:
    """The bytes of a file, with missing, unreadable or absurdly large files as MidiReadError."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limit:
            raise MidiReadError(path, f"file is {size} bytes, over the {limit}-byte limit")
        return p.read_bytes()
    except IsADirectoryError:
        raise MidiReadError(path, "is a directory") from None
    except FileNotFoundError:
        raise MidiReadError(path, "no such file") from None
    except OSError as e:
        raise MidiReadError(path, e.strerror or str(e)) from None

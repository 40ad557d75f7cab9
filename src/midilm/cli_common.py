"""What every sub-command's command line shares: argument types, the one-line user error, per-file error
reports, atomic text output and the device check.

This sits at the bottom of the layers (beside `midilm.errors`), so that `midilm.annotate.cli`,
`midilm.generate.cli` and the others use it without importing the top-level `midilm.cli`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from midilm.errors import MidilmError

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(MidilmError):
    """A problem with the user's input, shown as one line."""


def positive_float(text: str) -> float:
    """argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def bpm(text: str) -> float:
    """argparse type: a tempo from 1 to 1000 beats per minute."""
    value = positive_float(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"bpm must be between 1 and 1000, got {text}")
    return value


def meter(text: str) -> tuple[int, int]:
    """argparse type: a time signature such as 3/4, as (numerator, denominator)."""
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"meter must look like 3/4, got {text!r}") from None
    if not (1 <= num <= 64 and den in (1, 2, 4, 8, 16, 32, 64)):
        raise argparse.ArgumentTypeError(f"meter {text} is not a valid time signature")
    return num, den


def report_file_error(path: str, error: Exception, as_json: bool) -> None:
    """A file a batch command could not handle: a JSON line on stdout (with --json) and one line on stderr."""
    if as_json:
        print(json.dumps({"path": path, "error": str(error)}), flush=True)
    print(f"midilm: error: {error}", file=sys.stderr)


class atomic_text:  # noqa: N801 (used like open())
    """Write a text file through a temporary sibling, renamed into place only on success."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.f = open(self.tmp, "w")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def check_device(name: str | None, flag: str = "--device") -> str | None:
    """`name` when torch can place a model there on this machine (None: the loader's default, the CPU).

    Checked before any model loads, so that an unavailable device is one readable line at once, not a
    torch assertion after a minute of loading.
    """
    if name is None or not str(name).strip():
        return None
    import torch

    try:
        device = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise CliError(f"{flag} {name}: not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cpu":
        return str(name).strip()
    backends = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}
    backend = backends.get(device.type, getattr(torch, device.type, None))
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise CliError(f"{flag} {name}: this machine has no {device.type} device that torch can use "
                       f"(use --device cpu)")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise CliError(f"{flag} {name}: this machine has {count()} {device.type} device(s), numbered from 0")
    return str(name).strip()

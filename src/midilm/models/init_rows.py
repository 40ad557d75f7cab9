"""Initialisations of the AMT rows that share structure between rows, and a family fill for trained models.

`expand_vocabulary(init="structured")` (models/vocab.py) calls `structured_rows`. Every new row is the mean
of the text rows plus, in units of the text rows' standard deviation per dimension:

- a shared offset per AMT block (as `block-mean`: time, duration, note, control, special);
- time and duration rows (and their anticipated control copies): a smooth function of the value, a
  random projection of sinusoidal features of the onset or duration in seconds and of its logarithm, so
  that 0.50 s starts next to 0.51 s and far from 5 s;
- note rows (and their controls): an instrument part plus a pitch part. The instrument part is the
  embedding of the program's GM family (piano, guitar, bass, strings, ..., drums) plus a smaller
  program-specific part; the pitch part is a smooth function of the pitch (height and pitch class). A
  fiddle's rows therefore start as the strings family's pitch rows, not as noise.

The control copies share the value and instrument parts with their event rows and differ by their own
block offset. `family_fill` does the same for a model that has already been trained: the note rows of
instruments that never had a training note are set to the mean of the trained rows of their family at
the same pitch, so an unseen instrument writes its family's pitch distribution instead of untrained rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from midilm.codecs.amt import vocab as V
from midilm.music.gm import DRUMS, FAMILIES

STRUCTURED_SCHEMES = ("structured",)
N_FREQ = 8  # sinusoid pairs per value: periods spread geometrically over the value's range
INSTRUMENT_SHARE = 0.35  # size of the program-specific part against the family part
NOTE_PARTS = (1.0, 1.0)  # weights of the instrument and pitch parts of a note row


def family_index(program: int) -> int:
    """0..15 for the GM families, 16 for drums."""
    return len(FAMILIES) if program == DRUMS else program // 8


def value_features(values, fastest: float, slowest: float, log_unit: float = 1.0):
    """Smooth features of non-negative values (ticks, or semitones): sinusoids of the value with periods
    spread geometrically from `fastest` to `slowest`, sinusoids of log(1 + value / log_unit) (resolution
    where values are small, as hearing has for durations), and the centred log; columns of unit RMS.

    Neighbouring values get nearly equal features, distant ones different features: rows built from
    these start out ordered by value."""
    import torch

    x = torch.as_tensor(values, dtype=torch.float32)
    lx = torch.log1p(x / log_unit)
    periods = torch.logspace(math.log10(fastest), math.log10(slowest), N_FREQ)
    log_periods = torch.logspace(0.0, math.log10(16.0), N_FREQ)  # 1 .. 16 in units of log
    ang = 2 * math.pi * x[:, None] / periods[None, :]
    lang = 2 * math.pi * lx[:, None] / log_periods[None, :]
    feats = torch.cat([ang.sin(), ang.cos(), lang.sin(), lang.cos(), (lx - lx.mean())[:, None]], dim=1)
    return feats / feats.pow(2).mean(0, keepdim=True).sqrt().clamp_min(1e-6)


def _project(feats, dim: int, gen):
    """A random linear map of the features to `dim` whose output has about unit variance per dimension."""
    import torch

    w = torch.randn(feats.shape[1], dim, generator=gen) / math.sqrt(feats.shape[1])
    return feats @ w


def pitch_features(pitches):
    """Height (sinusoids over the 128 pitches) and pitch class (the 12-periodic circle and its fifths)."""
    import torch

    p = torch.as_tensor(pitches, dtype=torch.float32)
    height = value_features(p, 12.0, 256.0, 12.0)  # an octave up to twice the range
    chroma = torch.stack([f(2 * math.pi * k * p / 12) for k in (1, 5) for f in (torch.sin, torch.cos)], dim=1)
    return torch.cat([height, chroma * math.sqrt(2)], dim=1)


def structured_parts(dim: int, gen) -> dict:
    """The shared parts, each about unit variance per dimension: value rows for times and durations
    (indexed by ticks), pitch rows, family and program rows, and the block offsets."""
    import torch

    time_vals = torch.arange(V.MAX_TIME)
    dur_vals = torch.arange(V.MAX_DUR)
    fam = torch.randn(len(FAMILIES) + 1, dim, generator=gen)
    program = torch.randn(V.MAX_INSTR, dim, generator=gen)
    return {
        # periods from 0.2 s to twice the range, so that one tick (10 ms) never turns a row far
        "time": _project(value_features(time_vals, 20.0, 2.0 * V.MAX_TIME), dim, gen),
        "duration": _project(value_features(dur_vals, 20.0, 2.0 * V.MAX_DUR), dim, gen),
        "pitch": _project(pitch_features(torch.arange(V.MAX_PITCH)), dim, gen),
        "family": fam,
        "program": program,
        "blocks": torch.randn(5, dim, generator=gen),  # time, duration, note, control, special
    }


def note_parts(parts: dict):
    """[MAX_NOTE, dim] instrument part + pitch part, in AMT note order (instrument * 128 + pitch)."""
    import torch

    instr = torch.stack([parts["family"][family_index(i)] + INSTRUMENT_SHARE * parts["program"][i]
                         for i in range(V.MAX_INSTR)])
    instr = instr / math.sqrt(1 + INSTRUMENT_SHARE**2)
    a, b = NOTE_PARTS
    rows = a * instr[:, None, :] + b * parts["pitch"][None, :, :]
    return rows.reshape(V.MAX_NOTE, -1) / math.sqrt(a * a + b * b)


def structured_rows(text_rows, n_rows: int, gen, noise: float = 0.02, spread: float = 1.0):
    """`n_rows` (>= the AMT vocabulary) new rows for the "structured" scheme from the text rows [n, dim].

    Row = mean + std * (block offset + spread * structured part) + noise * std * N(0, 1); `spread` scales
    how far apart rows of one block start (1.0: as far as the block offsets are from each other)."""
    import torch

    base = text_rows.detach().float()
    dim = base.shape[1]
    mean, std = base.mean(0), base.std(0)
    parts = structured_parts(dim, gen)
    blk = parts["blocks"]
    notes = note_parts(parts)
    z = torch.zeros(n_rows, dim)
    z[V.TIME_OFFSET:V.DUR_OFFSET] = blk[0] + spread * parts["time"]
    z[V.DUR_OFFSET:V.NOTE_OFFSET] = blk[1] + spread * parts["duration"]
    z[V.NOTE_OFFSET:V.REST] = blk[2] + spread * notes
    z[V.REST] = blk[2]
    z[V.ATIME_OFFSET:V.ADUR_OFFSET] = blk[3] + spread * parts["time"]
    z[V.ADUR_OFFSET:V.ANOTE_OFFSET] = blk[3] + spread * parts["duration"]
    z[V.ANOTE_OFFSET:V.SPECIAL_OFFSET] = blk[3] + spread * notes
    z[V.SPECIAL_OFFSET:] = blk[4]
    return mean + std * z + noise * std * torch.randn(n_rows, dim, generator=gen)


def new_rows(scheme: str, text_rows, n_rows: int, gen, noise: float = 0.02):
    """The dispatch `expand_vocabulary` calls for the schemes of this module."""
    if scheme == "structured":
        return structured_rows(text_rows, n_rows, gen, noise)
    raise ValueError(f"unknown structured scheme {scheme!r}; known: {STRUCTURED_SCHEMES}")


def family_fill(weight, music_offset: int, trained_programs: Iterable[int], *, controls: bool = True) -> list[int]:
    """In place: the note rows of every program not in `trained_programs` become the mean of the trained
    programs' rows of the same GM family at the same pitch (event rows, and control rows when `controls`).
    Families with no trained program are left alone. Returns the programs that were filled.

    `weight` is the [vocab, dim] input (tied) embedding; `music_offset` where the AMT ids start."""
    import torch

    trained = sorted({int(p) for p in trained_programs})
    filled = []
    with torch.no_grad():
        for program in range(V.MAX_INSTR):
            if program in trained:
                continue
            peers = [p for p in trained if family_index(p) == family_index(program)]
            if not peers:
                continue
            for offset in (V.NOTE_OFFSET, V.ANOTE_OFFSET) if controls else (V.NOTE_OFFSET,):
                start = music_offset + offset
                rows = torch.stack([weight[start + p * V.MAX_PITCH:start + (p + 1) * V.MAX_PITCH] for p in peers])
                weight[start + program * V.MAX_PITCH:start + (program + 1) * V.MAX_PITCH] = rows.mean(0)
            filled.append(program)
    return filled

"""Time in a piece: tempo, beats and meter (read from the file where it can be trusted, estimated from the
notes where it cannot) and the words used for tempo and length.

When the file is trusted
------------------------
* Tempo map: trusted when note onsets sit on a beat-relative grid (sixteenths or triplets, after one
  constant offset). Performance MIDI (MAESTRO: every file says 120 bpm, onsets anywhere) fails this test,
  and its tempo and beats are estimated from the onsets instead.
* Time signature: trusted unless (a) there is none, (b) its numerator is 1 (POP909 writes a wrong 1/4 in
  617 files; 1/x is almost always an export artefact), (c) the tempo map is not trusted and the signature
  is the 4/4 that sequencers write by default, or (d) it is a duple 2/4 or 4/4 and the notes repeat with a
  clearly triple bar length (the default-looking 4/4 that the notes contradict).

Meter estimation
----------------
Onsets are placed on a grid of 12 units per quarter note. The strongest cue for bar length is how often a
note (same pitch) recurs exactly one and two bars later: accompaniment patterns and melodic motifs repeat
at the bar. The duple (2 and 4 quarters), triple (3 quarters) and 4.5-quarter (9/8) families each get the
mean recurrence over three lags that are not multiples of another family's bar. Within a 3-quarter bar,
6/8 and 3/4 differ in where the heavy onsets (chords, long notes) fall: every dotted quarter (lag 18
units) or every quarter (lag 12). Quarters divided in three (triplets) make the meter compound.
The weights were tuned on the training split only (see rhythm_eval.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midilm.music.piece import Piece, TimeSignature

TEMPO_EDGES = (40, 60, 70, 90, 110, 140, 160, 210)
TEMPO_WORDS = ("Grave", "Largo", "Adagio", "Andante", "Moderato", "Allegro", "Vivace", "Presto", "Prestissimo")
SIMPLE_TEMPO_EDGES = (80, 120, 160)
SIMPLE_TEMPO_WORDS = ("Slow", "Moderate", "Fast", "Very fast")
DURATION_EDGES = (30, 120, 300)
DURATION_WORDS = ("short fragment", "short song", "song", "long piece")

UNITS = 12  # grid units per quarter note: sixteenths (3) and triplet eighths (4) both land on it
_ALIGNED = 0.5  # share of onsets on the best 8 of 48 beat phases; MAESTRO ~0.2, quantised files > 0.8
_FRAME_RATE = 100.0  # onset envelope frames per second for performance MIDI
# bar-recurrence lags (units) per family; none is a multiple of another family's bar length
_DUPLE_LAGS = (48, 96, 192)
_TRIPLE_LAGS = (36, 72, 180)
_NINE_LAGS = (54, 162, 270)
_TRIPLE_WEIGHT = 0.9  # duple is the common case: triple must recur a little more clearly to win
_NINE_WEIGHT = 0.75
_TRIPLET_SHARE = 0.2  # share of onsets on triplet positions that makes the quarter a compound beat
_OVERRIDE_MARGIN = 1.5  # a file's duple signature yields only to a clearly triple recurrence


@dataclass(frozen=True)
class Rhythm:
    """Everything rhythm.py finds about a piece, computed once and shared by the analysers."""

    bpm: float
    bpm_source: str  # "tempo map" | "estimated"
    meter: str
    meter_source: str  # "file" | "estimated"
    beat_times: np.ndarray  # seconds
    downbeats: np.ndarray  # bool, one per beat
    grid_aligned: bool  # the tempo map's beats are the music's beats


def _bin_word(value: float, edges: tuple, words: tuple) -> str:
    # a value on an edge belongs to the faster / longer bin, as in MidiCaps
    return words[int(np.searchsorted(edges, value, side="right"))]


def tempo_word(bpm: float) -> str:
    """Italian tempo word (Grave below 40 bpm ... Prestissimo from 210)."""
    return _bin_word(bpm, TEMPO_EDGES, TEMPO_WORDS)


def tempo_word_simple(bpm: float) -> str:
    """Slow (< 80), Moderate (< 120), Fast (< 160) or Very fast."""
    return _bin_word(bpm, SIMPLE_TEMPO_EDGES, SIMPLE_TEMPO_WORDS)


def duration_word(seconds: float) -> str:
    """short fragment (< 30 s), short song (< 120 s), song (< 300 s) or long piece."""
    return _bin_word(seconds, DURATION_EDGES, DURATION_WORDS)


# ---------------------------------------------------------------------------------------------- tempo


def _onset_ticks(piece: Piece) -> np.ndarray:
    t = piece.start_tick  # sorted by Piece
    return t[np.r_[True, np.diff(t) != 0]] if len(t) else t


def grid_alignment(piece: Piece) -> float:
    """Share of distinct onsets on the 8 most used of 48 phases within the beat (1.0 = quantised)."""
    t = _onset_ticks(piece)
    if len(t) < 16:
        return 1.0  # too few onsets to doubt the file
    tpb = piece.ticks_per_beat
    hist = np.bincount((t % tpb) * 48 // tpb, minlength=48)
    return float(np.sort(hist)[-8:].sum() / hist.sum())


def tempo_map_bpm(piece: Piece) -> float:
    """Tempo that holds for most of the time between the first onset and the last note-off."""
    tm = piece.tempo_map
    if len(tm.ticks) == 1 or not len(piece):
        return float(tm.bpm[0])
    lo, hi = int(piece.start_tick[0]), int(piece.end_tick.max())
    starts = np.clip(tm.ticks, lo, hi)
    stops = np.clip(np.r_[tm.ticks[1:], hi], lo, hi)
    secs = tm.seconds(stops) - tm.seconds(starts)
    if secs.sum() <= 0:
        return float(tm.bpm_at(lo))
    order = np.argsort(tm.bpm)
    cum = np.cumsum(secs[order])
    return float(tm.bpm[order][np.searchsorted(cum, cum[-1] / 2)])


def _onset_envelope(times: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    idx = np.round(times * _FRAME_RATE).astype(np.int64)
    env = np.bincount(idx - idx.min(), weights=velocity / 127.0)
    # chords add up loudness; the square root keeps a big chord from drowning the melody's onsets
    env = np.sqrt(env)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    return np.convolve(env, kernel / kernel.sum(), mode="same")


def _period_from_envelope(env: np.ndarray, lo_bpm: float = 40.0, hi_bpm: float = 200.0) -> float:
    """Beat period in frames: the autocorrelation lag that best explains its multiples too (a comb over
    2, 3 and 4 periods), under a broad log-tempo prior around 120 bpm."""
    x = env - env.mean()
    n = 1 << int(np.ceil(np.log2(2 * len(x))))
    spec = np.fft.rfft(x, n)
    acf = np.fft.irfft(spec * np.conj(spec), n)[: len(x)]
    if len(acf) < 4 or acf[0] <= 0:
        return 60.0 * _FRAME_RATE / 120.0
    acf = np.maximum(acf / acf[0], 0.0)
    lo_lag = int(60.0 * _FRAME_RATE / hi_bpm)
    hi_lag = min(int(60.0 * _FRAME_RATE / lo_bpm) + 1, len(acf) - 2)
    if hi_lag <= lo_lag + 2:
        return 60.0 * _FRAME_RATE / 120.0
    lags = np.arange(lo_lag, hi_lag + 1)
    score = acf[lags].copy()
    for k in (2, 3, 4):
        # a true beat period also correlates at whole bars; this damps flips between metrical levels
        ok = lags * k < len(acf)
        score[ok] += 0.5 * acf[lags[ok] * k] / k
    bpm = 60.0 * _FRAME_RATE / lags
    # tuned on the MAESTRO fixtures for stability under time-stretch, not for any particular tempo
    score *= np.exp(-0.5 * (np.log2(bpm / 120.0) / 1.5) ** 2)
    k = int(np.argmax(score))
    lag = float(lags[k])
    if 0 < k < len(lags) - 1:  # parabolic interpolation for sub-frame precision
        a, b, c = acf[lags[k] - 1], acf[lags[k]], acf[lags[k] + 1]
        denom = a - 2 * b + c
        if denom < 0:
            lag += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return lag


def _estimated_bpm(times: np.ndarray, velocity: np.ndarray) -> float:
    if len(times) < 8:
        return 120.0
    return 60.0 * _FRAME_RATE / _period_from_envelope(_onset_envelope(times, velocity))


def estimate_tempo_from_notes(piece: Piece) -> float:
    """Tempo estimated from the onsets alone, whatever the file's tempo map says (for judging generated
    music, whose tempo event is the generator's choice, not evidence)."""
    return round(_estimated_bpm(piece.start, piece.velocity), 2) if len(piece) else 120.0


def estimate_tempo(piece: Piece) -> tuple[float, str]:
    """Tempo in quarter-note bpm and its source: "tempo map" or "estimated" (from onsets)."""
    if not len(piece):
        return float(piece.bpm), "tempo map"
    if grid_alignment(piece) >= _ALIGNED:
        return round(tempo_map_bpm(piece), 2), "tempo map"
    return round(_estimated_bpm(piece.start, piece.velocity), 2), "estimated"


def _track_beats(times: np.ndarray, velocity: np.ndarray, bpm: float) -> np.ndarray:
    """Beat times following the onsets: each beat is searched near one period after the last, and the
    period adapts slowly (rubato) but stays within 25% of the global one."""
    env = _onset_envelope(times, velocity)
    t0 = float(np.round(times.min() * _FRAME_RATE) / _FRAME_RATE)
    period0 = 60.0 * _FRAME_RATE / bpm
    period = period0
    half = max(int(0.2 * period0), 1)
    offsets = np.arange(-half, half + 1)
    window = np.exp(-0.5 * (offsets / (0.1 * period0)) ** 2)
    beats = [0.0]
    last = 0.0
    floor = 0.05 * float(env.max())
    while last + period < len(env) - 1:
        guess = last + period
        centre = int(round(guess))
        idx = centre + offsets
        ok = (idx >= 0) & (idx < len(env))
        score = np.where(ok, env[np.clip(idx, 0, len(env) - 1)], 0.0) * window
        k = int(np.argmax(score))
        nxt = float(idx[k]) if score[k] > floor else guess
        period = float(np.clip(0.85 * period + 0.15 * (nxt - last), 0.75 * period0, 1.25 * period0))
        beats.append(nxt)
        last = nxt
    return t0 + np.asarray(beats) / _FRAME_RATE


# ---------------------------------------------------------------------------------------------- meter


@dataclass(frozen=True)
class _MeterGuess:
    name: str
    bar_units: int
    beat_units: int
    duple: float
    triple: float


def _grid_units_ticks(piece: Piece) -> tuple[np.ndarray, float]:
    """Onset positions in 1/12 quarter notes and the tick offset removed first (POP909 notes sit some
    40 ticks after the tempo map's grid)."""
    tpb = piece.ticks_per_beat
    t = piece.start_tick
    # the offset is taken modulo a sixteenth, not a grid unit: POP909's 40-tick lag is one whole unit
    residue = (t * 4) % tpb  # position inside one sixteenth, scaled by 4
    hist = np.bincount(residue * 24 // tpb, minlength=24)
    offset = int(np.argmax(hist)) * tpb / (4 * 24)
    units = np.floor((t - offset) * UNITS / tpb + 0.5).astype(np.int64)
    # some files (a third of POP909) run a whole sixteenth or more off their tempo map's beats: when one
    # phase inside the beat clearly outnumbers the tick grid's own beat, that phase is the beat
    phase = np.bincount(units % UNITS, minlength=UNITS)
    best = int(np.argmax(phase))
    if best and phase[best] > 1.3 * phase[0]:
        units -= best
        offset += best * tpb / UNITS
    return units, offset


def _grid_units_beats(times: np.ndarray, beat_times: np.ndarray) -> np.ndarray:
    pos = np.interp(times, beat_times, np.arange(len(beat_times), dtype=np.float64))
    return np.floor(pos * UNITS + 0.5).astype(np.int64)


def _share_in(sorted_keys: np.ndarray, query: np.ndarray) -> float:
    """Share of `query` found in `sorted_keys` (a binary search: far cheaper than np.isin's sort)."""
    if not len(query) or not len(sorted_keys):
        return 0.0
    idx = np.searchsorted(sorted_keys, query).clip(0, len(sorted_keys) - 1)
    return float(np.count_nonzero(sorted_keys[idx] == query) / len(query))


def _recurrence(key: np.ndarray, lags: tuple[int, ...]) -> float:
    """Mean share of (unit, pitch) onsets that recur exactly `lag` units later (`key` sorted)."""
    return float(np.mean([_share_in(key, key + lag * 128) for lag in lags]))


def _guess_meter(units: np.ndarray, pitch: np.ndarray, end_units: np.ndarray) -> _MeterGuess | None:
    """Meter from onset positions on the 12-per-quarter grid; None when there is too little music."""
    if len(units) < 16 or units.max() - units.min() < 4 * 48:
        return None
    u = units - units.min()
    key = np.sort(u * 128 + pitch)
    duple = _recurrence(key, _DUPLE_LAGS)
    triple = _TRIPLE_WEIGHT * _recurrence(key, _TRIPLE_LAGS)
    nine = _NINE_WEIGHT * _recurrence(key, _NINE_LAGS)
    # heavy onsets (chords, notes of a dotted eighth or longer) mark the beat: every 18 units in 6/8
    first = np.r_[True, np.diff(u) != 0]
    group = np.cumsum(first) - 1
    size = np.bincount(group)
    longest = np.zeros(len(size), dtype=np.int64)
    np.maximum.at(longest, group, end_units - units)
    heavy = u[first][(size >= 2) | (longest >= 9)]
    compound_bar = _share_in(heavy, heavy + 18) > 1.5 * _share_in(heavy, heavy + 12)
    triplets = float(np.isin(u % UNITS, (4, 8)).mean())
    if nine > max(duple, triple):
        name, bar, beat = "9/8", 54, 18
    elif triple > duple:
        name, bar, beat = ("6/8", 36, 18) if compound_bar else ("3/4", 36, 12)
    else:
        # 2/4 when the half-bar repeats about as well as the bar
        two = _share_in(key, key + 24 * 128) >= 0.9 * _share_in(key, key + 48 * 128)
        name, bar, beat = ("2/4", 24, 12) if two else ("4/4", 48, 12)
    if triplets > _TRIPLET_SHARE and name in ("2/4", "3/4", "4/4"):
        # quarters divided in three: the notated quarter is a dotted-quarter beat
        name = {"2/4": "6/8", "3/4": "9/8", "4/4": "12/8"}[name]
    return _MeterGuess(name, bar, beat, duple, max(triple, nine))


def _bar_phase(units: np.ndarray, pitch: np.ndarray, end_units: np.ndarray, bar: int, beat: int) -> int:
    """Bar start (units, modulo `bar`) where bass changes, chords and long notes land most."""
    first = np.r_[True, np.diff(units) != 0]
    gu = units[first]
    bass = pitch[first]
    change = np.r_[True, np.diff(bass) != 0]
    group = np.cumsum(first) - 1
    longest = np.zeros(len(gu), dtype=np.int64)
    np.maximum.at(longest, group, end_units - units)
    weight = change * 1.0 + np.bincount(group) / 4.0 + np.minimum(longest, 48) / 24.0
    on_beat = np.bincount(gu % bar, weights=weight, minlength=bar)
    candidates = np.arange(0, bar, beat)
    return int(candidates[int(np.argmax(on_beat[candidates]))])


def _meter_parts(name: str) -> tuple[int, int]:
    num, den = name.split("/")
    return int(num), int(den)


def _beat_ticks(num: int, den: int, tpb: int) -> float:
    whole = 4 * tpb
    if den == 8 and num % 3 == 0 and num > 3:
        return 3 * whole / 8  # compound: dotted-quarter beats
    return whole / den


def _main_signature(piece: Piece) -> TimeSignature | None:
    """The time signature that spans the most of the piece's ticks."""
    sigs = piece.time_signatures
    if len(sigs) <= 1:
        return sigs[0] if sigs else None
    end = int(piece.end_tick.max()) if len(piece) else sigs[-1].tick + 1
    spans: dict[str, int] = {}
    for s, nxt in zip(sigs, [*sigs[1:], None]):
        stop = end if nxt is None else nxt.tick
        spans[str(s)] = spans.get(str(s), 0) + max(stop - s.tick, 0)
    best = max(spans, key=spans.get)
    return next(s for s in sigs if str(s) == best)


def analyze_rhythm(piece: Piece, trust_file: bool = True) -> Rhythm:
    """Tempo, meter and beats of a piece, each from the file where it is trusted, else estimated.

    `trust_file=False` ignores the file's time signatures (to measure the estimator alone)."""
    if not len(piece):
        sig = _main_signature(piece) if trust_file else None
        usable = sig is not None and sig.numerator > 1
        return Rhythm(float(piece.bpm), "tempo map", str(sig) if usable else "4/4", "file" if usable else "estimated",
                      np.zeros(0), np.zeros(0, dtype=bool), True)
    aligned = grid_alignment(piece) >= _ALIGNED
    tpb = piece.ticks_per_beat
    if aligned:
        bpm, bpm_source = tempo_map_bpm(piece), "tempo map"
        units, offset = _grid_units_ticks(piece)
        end_units = units + np.round((piece.end_tick - piece.start_tick) * UNITS / tpb).astype(np.int64)
        tracked = None
    else:
        times = piece.start
        bpm, bpm_source = _estimated_bpm(times, piece.velocity), "estimated"
        tracked = _track_beats(times, piece.velocity, bpm)
        offset = 0.0
        units = _grid_units_beats(times, tracked)
        end_units = _grid_units_beats(piece.end, tracked)
        end_units = np.maximum(end_units, units)
    sig = _main_signature(piece) if trust_file else None
    file_meter = str(sig) if sig is not None else None
    trusted = file_meter is not None and sig.numerator > 1 and (aligned or file_meter != "4/4")
    guess = None
    if not trusted or file_meter in ("2/4", "4/4"):
        guess = _guess_meter(units, piece.pitch, end_units)
    if trusted and guess is not None and file_meter in ("2/4", "4/4"):
        trusted = not (guess.name in ("3/4", "6/8", "9/8") and guess.triple > _OVERRIDE_MARGIN * guess.duple)
    if trusted:
        meter, meter_source = file_meter, "file"
    elif guess is not None:
        meter, meter_source = guess.name, "estimated"
    else:
        meter, meter_source = (file_meter if file_meter and sig.numerator > 1 else "4/4"), "estimated"
    beat_times, downbeats = _beats(piece, meter, meter_source, units, end_units, offset, tracked, guess)
    return Rhythm(round(float(bpm), 2), bpm_source, meter, meter_source, beat_times, downbeats, aligned)


def _beats(piece: Piece, meter: str, source: str, units: np.ndarray, end_units: np.ndarray, offset: float,
           tracked: np.ndarray | None, guess: _MeterGuess | None) -> tuple[np.ndarray, np.ndarray]:
    """Beat times and downbeat flags: the file's bar grid, or the estimated meter laid on the tick grid
    (or on the tracked beats of a performance) from the estimated bar phase."""
    tpb = piece.ticks_per_beat
    last_tick = int(piece.end_tick.max())
    if tracked is None and source == "file" and piece.time_signatures:
        # the file's bars: one grid per time-signature segment
        ticks: list[np.ndarray] = []
        down: list[np.ndarray] = []
        sigs = piece.time_signatures
        for s, nxt in zip(sigs, [*sigs[1:], None]):
            stop = last_tick + 1 if nxt is None else nxt.tick
            if s.numerator <= 0 or stop <= s.tick:
                continue
            step = _beat_ticks(s.numerator, s.denominator, tpb)
            per_bar = max(int(round(s.numerator * 4 * tpb / s.denominator / step)), 1)
            seg = s.tick + step * np.arange(int(np.ceil((stop - s.tick) / step)))
            ticks.append(seg)
            down.append(np.arange(len(seg)) % per_bar == 0)
        if sigs and sigs[0].tick > 0:
            # notes before the first signature: quarter beats, no bar lines known
            pre = np.arange(0, sigs[0].tick, tpb, dtype=np.float64)
            ticks.insert(0, pre)
            down.insert(0, np.zeros(len(pre), dtype=bool))
        return piece.tempo_map.seconds(np.concatenate(ticks) + offset), np.concatenate(down)
    num, den = _meter_parts(meter)
    if guess is not None and guess.name == meter:
        bar, beat = guess.bar_units, guess.beat_units
    else:
        beat = int(round(_beat_ticks(num, den, UNITS)))
        bar = int(round(num * 4 * UNITS / den))
    bar = max(bar, beat)
    phase = _bar_phase(units, piece.pitch, end_units, bar, beat)
    if tracked is None:
        grid_units = np.arange(phase % beat, int(end_units.max()) + 1, beat)
        ticks_f = offset + grid_units * tpb / UNITS
        keep = ticks_f >= 0
        return piece.tempo_map.seconds(ticks_f[keep]), ((grid_units[keep] - phase) % bar) == 0
    # performance: every tracked beat is one grid quarter; bars are laid over them
    beat_pos = np.arange(len(tracked)) * UNITS
    return tracked, ((beat_pos - phase) % bar) == 0


def estimate_beats(piece: Piece) -> tuple[np.ndarray, np.ndarray]:
    """Beat times in seconds and a downbeat flag per beat (bar starts)."""
    r = analyze_rhythm(piece)
    return r.beat_times, r.downbeats


def estimate_meter(piece: Piece, trust_file: bool = True) -> tuple[str, str]:
    """Time signature as "3/4" and its source, "file" or "estimated" (see the module docstring)."""
    r = analyze_rhythm(piece, trust_file=trust_file)
    return r.meter, r.meter_source

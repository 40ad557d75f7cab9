"""Steering at inference time: soft biases on the logits of the block the grammar allows, and
classifier-free guidance (CFG) against the empty-description branch.

Every control is a bias in nats added to a row's logits over AMT ids [lo, hi) (a time, duration or note
block, or the whole music block when sampling without the grammar), each with its own strength (0 = off):

- key prior (note ids): pitch classes of the asked key are favoured, tonic triad > other scale tones >
  chromatic; drums are left alone;
- beat grid (time ids): an onset is drawn toward the subdivisions (16ths) of the asked tempo and meter,
  more strongly toward beats and bar lines; the row's current onset (another note of the same chord)
  is exempt, it already paid; (duration ids) a note that starts off the beat is drawn to end by the next
  beat instead of ringing across it;
- gap penalty (time ids): an onset more than `max_gap_beats` after the row's last onset loses
  `gap_strength` nats per beat beyond it, so long holes become increasingly unlikely;
- sustain (duration ids): a note shorter than a beat loses up to `sustain_strength` nats, the shorter the
  more, so that notes ring instead of sounding staccato;
- melodic motion (note ids, with a key): a note shorter than a half note is drawn toward a step of the key's
  scale from its instrument's previous top note and away from repeating it; longer notes keep the key prior's
  triad pull, which decides the key a listener (and the key finder) hears;
- established key (note ids, only without a key): once a piece has ESTABLISHED_NOTES pitched notes, the key
  they establish (a duration-weighted pitch-class profile scored against the analysis's Aarden-Essen key
  profiles, re-estimated at every note) is favoured: its scale tones keep their logits, the others lose S
  (minor's leading tone S/2), with no tonic-triad pull; drums are left alone;
- instrument balance (note ids, with two or more instruments asked for): each asked-for instrument's share of
  the row's recent notes is drawn toward a fair share (drums count double: a kit plays more notes than a
  part), up to +S where an instrument plays too little and -S where it plays too much, so that a band prompt
  does not come out as drums alone; the only control that moves mass between instruments;
- CFG: logits = uncond + scale * (cond - uncond) on the allowed block, the unconditioned branch being
  MIDI-LLM's prompt with no caption (the SFT drops 10 % of captions, so the model knows that prompt).

`default_seconds` proposes a length from the prompt (a piece of 16 bars, 30-60 s, unless the prompt asks
for something short, long or a length in seconds or minutes). `derive_steering` builds the config from
the prompt and options: each control is on where the prompt or the options give it something to steer
toward (a key prior only when a key is known; the grid at the asked tempo, else at 120 bpm).

All functions are pure and vectorised: numpy in, numpy out, broadcasting over rows; `steer_logits`
and `cfg_mix` also take torch tensors (the bias is built in numpy and moved to the logits' device).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

from midilm.annotate.harmony import KEY_PROFILES
from midilm.codecs.amt.vocab import DRUMS, DUR_OFFSET, MAX_PITCH, NOTE_OFFSET, REST, TIME_RESOLUTION

MODES = ("major", "minor")
TICKS_PER_MINUTE = 60 * TIME_RESOLUTION  # AMT time ids are 10 ms ticks
DEFAULT_BPM = 120.0  # the grid's tempo when neither the prompt nor the options name one

# Defaults chosen on the validation split with the shipped model (docs/steering.md): strengths in nats. The
# gap threshold is short (half a beat) because this model writes about a fifth of real pieces' notes a second.
DEFAULT_KEY_STRENGTH = 6.0
DEFAULT_GRID_STRENGTH = 6.0
DEFAULT_GAP_STRENGTH = 8.0
DEFAULT_MAX_GAP_BEATS = 0.5
# Below SLOW_BPM the gap penalty starts after a whole beat: pushed to fill every half beat, slow music ran in
# even eighths that are heard (and estimated from the notes) at twice the asked tempo.
SLOW_BPM = 90.0
SLOW_MAX_GAP_BEATS = 1.0
DEFAULT_CFG_SCALE = 1.0  # 1 = off: CFG doubles the cost per token
DEFAULT_STEP_STRENGTH = 3.0  # a non-triad scale step then weighs as a triad tone under the key prior
# 1: with v3 it lengthened notes (median 0.25 -> 0.33 s; real 0.43) and kept key, tempo and in-scale share on
# validation. With v2 it was off: it re-draws the outputs of prompts that give no key, whose in-scale share
# v2 could not spare on the held-out prompts (docs/steering.md).
DEFAULT_SUSTAIN_STRENGTH = 1.0
# Notes this many quarter notes long or longer get no melodic-motion bias: they keep the key prior's pull
# toward the tonic triad (sounding time weighs most in the key finder), the shorter ones move by step. A beat
# was tried first: with the sustain control most notes last a beat, and the steps went (docs/steering.md).
# Off: on the validation prompts whose piece has a key the prompt does not name, the outputs kept to the key
# they established (0.87 -> 0.96-0.98 of note time in its scale), but that key is rarely the piece's, and the
# share in the piece's key fell (0.58 -> 0.52); named-key prompts are untouched (docs/steering.md).
DEFAULT_ESTABLISHED_STRENGTH = 0.0
ESTABLISHED_NOTES = 16  # pitched notes (about two bars at this model's density) before a key counts as established
# Chosen on the 10 validation band prompts (docs/steering.md "Instrument balance"): without it v3 gives one
# instrument nearly all the notes (instrument recall 0.25-0.47); at 4 every asked-for instrument plays (recall
# 1.0) and drums keep about a third of the notes, as in the band arrangements it trained on (median 0.36).
DEFAULT_BALANCE_STRENGTH = 4.0
BALANCE_LOOKBACK = 64  # recent notes whose instruments count
BALANCE_PRIOR_NOTES = 8  # pseudo-notes at the fair shares, so the first few notes do not swing the bias
BALANCE_DRUM_WEIGHT = 2.0  # a kit's fair share counts as two parts'
MELODY_MAX_BEATS = 2.0
MELODY_STEPS = (-2, -1, 1, 2)  # semitones from the previous top note that count as a step (if in the scale)
_MELODY_LOOKBACK = 48  # events searched back for an instrument's previous onset

# Weight of each pitch class above the tonic, in [0, 1]: 1 for the tonic triad, 0.5 for the other scale
# tones, 0 for chromatic ones; minor's raised seventh (the harmonic-minor leading tone) sits in between.
_MAJOR_WEIGHTS = (1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 0.5, 0.0, 0.5)
_MINOR_WEIGHTS = (1.0, 0.0, 0.5, 1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 0.5, 0.25)
DEGREE_WEIGHTS = {"major": _MAJOR_WEIGHTS, "minor": _MINOR_WEIGHTS}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor

# How on-grid a candidate counts at each grid level, strongest (the meter's beat) first, then eighth and sixteenth
# notes. Subdivisions count nearly as much as beats: a strong grid must not thin the music out to one onset a beat.
_LEVEL_WEIGHTS = (1.0, 0.9, 0.8, 0.8)
GRID_SIGMA_FRACTION = 0.1  # tolerance of a grid point: a tenth of a 16th, at least one tick
# A note that starts off the beat and rings across the next one (a syncopation, which `midilm analyze` counts:
# real pieces 0.03 of their notes, the steered model 0.19 on the validation prompts) costs this share of the
# grid's strength; its onset and a chord's other notes are left alone.
SYNCOPATION_WEIGHT = 0.5
_OFF_BEAT = 0.08  # share of a beat from a beat beyond which an onset is off it (analyze's syncopation)
_ACROSS = 0.05  # share of a beat past the next beat by which a note counts as ringing across it

_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACCIDENTAL = {"": 0, "#": 1, "♯": 1, "-sharp": 1, " sharp": 1, "b": -1, "♭": -1, "-flat": -1, " flat": -1}
_ACC = r"(#|♯|b|♭|-sharp| sharp|-flat| flat)?"
# In prose the tonic letter must be upper case ("in a minor key" is no key); the mode may be any case.
_KEY_IN_TEXT = re.compile(r"(?<![\w#])([A-G])" + _ACC + r"[ -]?((?i:major|minor))\b")
_KEY_OPTION = re.compile(r"([a-gA-G])" + _ACC + r"\s*(major|minor|maj|min|m)?", re.IGNORECASE)


def parse_key(text: str) -> tuple[int, str]:
    """A key as given to `--key`: 'C major', 'Am', 'f# minor', 'E-flat major', 'Bb' -> (tonic pc, mode)."""
    m = _KEY_OPTION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a key: {text!r} (try 'C major', 'A minor', 'F#m', 'Eb')")
    mode = m.group(3) or "major"
    # lead-sheet spelling: 'Cm' is C minor, 'CM' C major
    minor = mode.lower() in ("minor", "min") or mode == "m"
    return (_PC[m.group(1).upper()] + _ACCIDENTAL[(m.group(2) or "").lower()]) % 12, "minor" if minor else "major"


def key_in_text(prompt: str) -> tuple[int, str] | None:
    """The first key a prompt names ('... in E-flat major ...'), or None."""
    m = _KEY_IN_TEXT.search(prompt)
    if not m:
        return None
    return (_PC[m.group(1)] + _ACCIDENTAL[(m.group(2) or "").lower()]) % 12, m.group(3).lower()


def rename_key(prompt: str, new_key: str) -> str:
    """The prompt with the first key it names (as `key_in_text` finds it) replaced by `new_key`."""
    return _KEY_IN_TEXT.sub(lambda _: new_key, prompt, count=1)


# Lead-sheet chord symbols as the captions write them (annotate/captions.chord_symbol): suffix -> intervals
_CHORD_TONES = {
    "": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10), "dim": (0, 3, 6),
    "aug": (0, 4, 8), "sus4": (0, 5, 7), "sus2": (0, 2, 7), "dim7": (0, 3, 6, 9), "m7b5": (0, 3, 6, 10),
    "m6": (0, 3, 7, 9), "6": (0, 4, 7, 9), "9": (0, 2, 4, 7, 10), "m9": (0, 2, 3, 7, 10), "maj9": (0, 2, 4, 7, 11),
    "m(maj7)": (0, 3, 7, 11),
}  # fmt: skip
_TONIC_CHORDS = {"major": ("", "maj7", "6", "maj9"), "minor": ("m", "m7", "m6", "m9", "m(maj7)")}
_CHORD = (r"([A-G])(#|b)?(" + "|".join(re.escape(q) for q in sorted(_CHORD_TONES, key=len, reverse=True) if q)
          + r")?(?![\w#(])")
# a list of at least two chords ("Am, F, C and G", "Am - F - C"): a lone capital A or B is an article or a word
_CHORD_LIST = re.compile(r"(?<![\w#])" + _CHORD + r"(?:(?:,\s*and\s+|,\s*|\s+and\s+|\s+-\s+)" + _CHORD + r")+")
_ONE_CHORD = re.compile(_CHORD)


def chords_in_text(prompt: str) -> list[tuple[int, str]]:
    """The chords a prompt lists ("A recurring chord progression of Am, F, C and G"), as (root pitch class,
    suffix) in order; only lists of two or more chord symbols count."""
    out = []
    for m in _CHORD_LIST.finditer(prompt):
        for c in _ONE_CHORD.finditer(m.group(0)):
            out.append(((_PC[c.group(1)] + _ACCIDENTAL[(c.group(2) or "").lower()]) % 12, c.group(3) or ""))
    return out


def key_from_chords(chords: list[tuple[int, str]]) -> tuple[int, str] | None:
    """The key a list of chords most likely lives in, or None for fewer than two chords: the key whose scale
    (natural minor plus its leading tone) holds the most of the chords whole, then the one whose tonic chord
    comes most often and first. On captions of the training split that list chords but name no key it is the
    piece's key 69 % of the time and the key or its relative 83 %."""
    if len(chords) < 2:
        return None
    best, best_score = None, -math.inf
    for tonic in range(12):
        for mode in MODES:
            scale = {(tonic + d) % 12 for d in SCALES[mode]} | ({(tonic + 11) % 12} if mode == "minor" else set())
            fit = sum(all((root + i) % 12 in scale for i in _CHORD_TONES[q]) for root, q in chords) / len(chords)
            is_tonic = [root == tonic and q in _TONIC_CHORDS[mode] for root, q in chords]
            score = 4.0 * fit + sum(is_tonic) / len(chords) + 0.5 * is_tonic[0]
            if score > best_score:
                best, best_score = (tonic, mode), score
    return best


# --- the config ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringConfig:
    """What to steer toward and how hard; a strength of 0 (or cfg_scale 1) switches that control off."""

    key: tuple[int, str] | None = None  # (tonic pitch class, "major" | "minor")
    key_source: str | None = None  # "option", "prompt" or "chords" (guessed from the chords the prompt lists)
    key_strength: float = 0.0
    bpm: float | None = None  # the grid's tempo (quarter notes a minute)
    meter: tuple[int, int] = (4, 4)
    grid_strength: float = 0.0
    grid_origin: int = 0  # a tick (in the row's time frame) on a bar line
    max_gap_beats: float = DEFAULT_MAX_GAP_BEATS
    gap_strength: float = 0.0
    cfg_scale: float = 1.0
    step_strength: float = 0.0  # steps from the previous top note +S, repeating it -S (notes under a half note)
    sustain_strength: float = 0.0  # durations under a beat lose up to S
    established_strength: float = 0.0  # without a key: tones outside the key the notes so far establish lose S
    balance_strength: float = 0.0  # asked-for instruments drawn toward fair shares of the recent notes, up to +-S
    instruments: tuple[int, ...] | None = None  # the asked-for instruments (program 0-127, drums 128)

    def __post_init__(self) -> None:
        if self.instruments is not None:  # JSON (the vLLM worker's copy) brings a list
            object.__setattr__(self, "instruments", tuple(sorted({int(i) for i in self.instruments})))
            if any(not 0 <= i <= DRUMS for i in self.instruments):
                raise ValueError(f"instruments must be programs 0-{DRUMS} (drums {DRUMS}), got {self.instruments}")
        for name in ("key_strength", "grid_strength", "gap_strength", "step_strength", "sustain_strength",
                     "established_strength", "balance_strength"):
            value = getattr(self, name)
            if not (0.0 <= value <= 100.0):
                raise ValueError(f"{name} must be in [0, 100], got {value}")
        if not 0.0 <= self.cfg_scale <= 20.0:
            raise ValueError(f"cfg_scale must be in [0, 20], got {self.cfg_scale}")
        if not self.max_gap_beats > 0:
            raise ValueError(f"max_gap_beats must be positive, got {self.max_gap_beats}")
        if self.key is not None and (self.key[1] not in MODES or not 0 <= self.key[0] < 12):
            raise ValueError(f"key must be (0-11, 'major'|'minor'), got {self.key}")
        if self.bpm is not None and not 10 <= self.bpm <= 400:
            raise ValueError(f"bpm must be in [10, 400], got {self.bpm}")
        if self.meter[0] < 1 or self.meter[1] not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"meter must be N/(1|2|4|8|16|32), got {self.meter}")

    @property
    def key_on(self) -> bool:
        return self.key is not None and self.key_strength > 0

    @property
    def steps_on(self) -> bool:
        return self.key is not None and self.step_strength > 0

    @property
    def established_on(self) -> bool:
        """Whether the key the notes establish is steered toward (only when no key is given)."""
        return self.key is None and self.established_strength > 0

    @property
    def balance_on(self) -> bool:
        """Whether instrument shares are balanced (two or more instruments asked for)."""
        return self.balance_strength > 0 and self.instruments is not None and len(self.instruments) >= 2

    @property
    def notes_on(self) -> bool:
        """Whether a bias may apply to the note block."""
        return self.key_on or self.steps_on or self.established_on

    @property
    def sustain_on(self) -> bool:
        return self.sustain_strength > 0

    @property
    def grid_on(self) -> bool:
        return self.grid_strength > 0

    @property
    def gap_on(self) -> bool:
        return self.gap_strength > 0

    @property
    def biased(self) -> bool:
        """Whether any logit bias applies (CFG aside)."""
        return (self.key_on or self.grid_on or self.gap_on or self.steps_on or self.sustain_on or self.established_on
                or self.balance_on)

    @property
    def active(self) -> bool:
        return self.biased or self.cfg_scale != 1.0

    @property
    def beat_ticks(self) -> float:
        """Ticks per quarter note at the grid's tempo (bpm counts quarter notes, as MIDI and the captions do):
        the unit of the gap penalty and of the grid's levels."""
        return TICKS_PER_MINUTE / (self.bpm or DEFAULT_BPM)

    @property
    def grid_levels(self) -> tuple[tuple[float, float], ...]:
        """(period in quarter notes, weight) of the grid's levels: the meter's beat (a dotted quarter in a
        compound meter such as 6/8, an eighth in 5/8 or 7/8, a half in x/2), then the eighth and sixteenth notes
        that divide it. Subdivisions are absolute note values, so a jig's grid is eighths and sixteenths, not
        sixteenths and 32nds."""
        num, den = self.meter
        beat = 1.5 if den == 8 and num % 3 == 0 else 4.0 / den
        periods = [beat] + [p for p in (1.0, 0.5, 0.25) if p < beat and beat / p == round(beat / p)]
        return tuple(zip(periods, _LEVEL_WEIGHTS[: len(periods)], strict=False))

    def describe(self) -> dict:
        """The settings as plain JSON values (for the settings sidecar)."""
        out = asdict(self)
        out["key"] = None if self.key is None else key_label(self.key)
        out["meter"] = f"{self.meter[0]}/{self.meter[1]}"
        out["instruments"] = None if self.instruments is None else list(self.instruments)
        return out


OFF = SteeringConfig()

_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def key_label(key: tuple[int, str]) -> str:
    return f"{_NAMES[key[0]]} {key[1]}"


def derive_steering(prompt: str, *, key: str | None = None, bpm: float | None = None,
                    meter: tuple[int, int] | None = None, steer: bool = True, key_strength: float | None = None,
                    grid_strength: float | None = None, gap_strength: float | None = None,
                    max_gap_beats: float | None = None, cfg_scale: float | None = None,
                    step_strength: float | None = None, sustain_strength: float | None = None,
                    established_strength: float | None = None, balance_strength: float | None = None,
                    instruments: Sequence[int] | None = None) -> SteeringConfig:
    """The steering for one prompt: on where the prompt or the options give it a target.

    `key` (an option, e.g. "F# minor") overrides the prompt's; a prompt that names no key but lists chords
    gets the key those chords most likely live in (`key_from_chords`); `bpm` and `meter` are the resolved ones
    (option, else prompt); `instruments` the asked-for ones (the grammar's allow-list; None: any). `steer=False`
    gives the model alone (every control off) unless a strength is
    given explicitly. A strength given as None takes its default; 0 switches the control off.
    """
    found, source = (parse_key(key), "option") if key else (key_in_text(prompt), "prompt")
    if found is None and not key:
        found, source = key_from_chords(chords_in_text(prompt)), "chords"

    def pick(given: float | None, default: float) -> float:
        return float(given) if given is not None else default if steer else 0.0

    return SteeringConfig(
        key=found,
        key_source=source if found is not None else None,
        key_strength=pick(key_strength, DEFAULT_KEY_STRENGTH) if found is not None else 0.0,
        bpm=float(bpm) if bpm else None,
        meter=tuple(meter) if meter else (4, 4),
        grid_strength=pick(grid_strength, DEFAULT_GRID_STRENGTH),
        gap_strength=pick(gap_strength, DEFAULT_GAP_STRENGTH),
        max_gap_beats=float(max_gap_beats) if max_gap_beats else default_max_gap(bpm),
        cfg_scale=float(cfg_scale) if cfg_scale is not None else DEFAULT_CFG_SCALE if steer else 1.0,
        step_strength=pick(step_strength, DEFAULT_STEP_STRENGTH) if found is not None else 0.0,
        sustain_strength=pick(sustain_strength, DEFAULT_SUSTAIN_STRENGTH),
        established_strength=pick(established_strength, DEFAULT_ESTABLISHED_STRENGTH) if found is None else 0.0,
        # one instrument or none asked for: nothing to balance, and the notice and sidecar say it is off
        balance_strength=pick(balance_strength, DEFAULT_BALANCE_STRENGTH) if len(set(instruments or ())) >= 2 else 0.0,
        instruments=tuple(instruments) if instruments else None,
    )


def default_max_gap(bpm: float | None) -> float:
    """Beats between onsets before the gap penalty starts, when not given: half a beat, a whole one below
    SLOW_BPM (the grid's tempo: the asked one, else DEFAULT_BPM)."""
    return SLOW_MAX_GAP_BEATS if (bpm or DEFAULT_BPM) < SLOW_BPM else DEFAULT_MAX_GAP_BEATS


def shifted(config: SteeringConfig, dt: int) -> SteeringConfig:
    """The config for a row whose clock moved back by `dt` ticks (a sliding window re-zeroes its context)."""
    if not config.grid_on:
        return config
    return replace(config, grid_origin=config.grid_origin - int(dt))


# --- a sensible length ------------------------------------------------------------------------------

_SECONDS = re.compile(r"\b(\d{1,3}(?:\.\d+)?)[ -]?(seconds?|secs?|s)\b", re.IGNORECASE)
_MINUTES = re.compile(r"\b(\d{1,2}(?:\.\d+)?|one|two|three|four|five)[ -]?(minutes?|mins?)\b", re.IGNORECASE)
_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_SHORT = re.compile(r"\b(short|brief|tiny|little|miniature|jingle|sketch|snippet|loop)\b", re.IGNORECASE)
_LONG = re.compile(r"\b(long|extended|epic|lengthy)\b", re.IGNORECASE)
LENGTHS = {  # bars, then the clamp in seconds
    "short": (8, (10.0, 30.0)),
    "default": (16, (30.0, 60.0)),
    "long": (32, (60.0, 180.0)),
}
MAX_DEFAULT_SECONDS = 600.0


def default_seconds(prompt: str, bpm: float | None = None, meter: tuple[int, int] | None = None) -> float:
    """Length of the piece when no `--seconds` is given.

    A length the prompt states ("a 30-second jingle", "two minutes of ...") wins (up to 600 s). Otherwise
    16 bars at the asked tempo and meter, kept within 30-60 s; 8 bars within 10-30 s when the prompt asks
    for something short, 32 bars within 60-180 s for something long.
    """
    m = _MINUTES.search(prompt)
    if m:
        value = _WORD_NUMBERS.get(m.group(1).lower()) or float(m.group(1))
        return float(min(MAX_DEFAULT_SECONDS, max(5.0, 60.0 * float(value))))
    m = _SECONDS.search(prompt)
    if m and float(m.group(1)) >= 5:
        return float(min(MAX_DEFAULT_SECONDS, float(m.group(1))))
    kind = "short" if _SHORT.search(prompt) else "long" if _LONG.search(prompt) else "default"
    bars, (lo, hi) = LENGTHS[kind]
    num, den = meter or (4, 4)
    bar_seconds = num * (4.0 / den) * 60.0 / (bpm or DEFAULT_BPM)
    return float(min(hi, max(lo, bars * bar_seconds)))


# --- the biases ---------------------------------------------------------------------------------------


def key_pitch_bias(key: tuple[int, str], strength: float) -> np.ndarray:
    """(12,) bias per pitch class, 0 for the tonic triad down to -strength for chromatic pitch classes."""
    tonic, mode = key
    weights = np.roll(np.asarray(DEGREE_WEIGHTS[mode], dtype=np.float32), tonic)
    return (weights - 1.0) * np.float32(strength)


@lru_cache(maxsize=64)
def note_bias(key: tuple[int, str], strength: float) -> np.ndarray:
    """(16512,) bias over the note ids (instrument * 128 + pitch); drums (instrument 128) get none.
    Read-only: one array is shared by every row with the same key and strength."""
    return _note_table(key_pitch_bias(key, strength))


def _note_table(per_pc: np.ndarray) -> np.ndarray:
    """(16512,) read-only bias over the note ids from a (12,) bias per pitch class; drums get none."""
    table = np.tile(per_pc[np.arange(MAX_PITCH) % 12], DRUMS + 1).reshape(DRUMS + 1, MAX_PITCH)
    table[DRUMS] = 0.0
    out = table.reshape(-1)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=24)
def _scale_mask(key: tuple[int, str]) -> np.ndarray:
    """(12,) read-only: whether each pitch class is in the key's (natural) scale."""
    tonic, mode = key
    mask = np.zeros(12, dtype=bool)
    mask[[(tonic + d) % 12 for d in SCALES[mode]]] = True
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=64)
def scale_note_bias(key: tuple[int, str], strength: float) -> np.ndarray:
    """(16512,) bias over the note ids toward a key's scale, with no triad pull: 0 on the scale's (natural)
    tones, -strength/2 on minor's leading tone, -strength on the other pitch classes; drums get none. Read-only."""
    tonic, mode = key
    per_pc = np.where(_scale_mask(key), 0.0, -strength).astype(np.float32)
    if mode == "minor":
        per_pc[(tonic + 11) % 12] = -strength / 2
    return _note_table(per_pc)


def profile_key(pc_weights: np.ndarray) -> tuple[int, str]:
    """The key whose Aarden-Essen profile (the analysis's local-key profiles) best matches a (12,) pitch-class
    weight vector (correlation; ties go to the first, major before minor, C upward)."""
    k = int(np.argmax(KEY_PROFILES @ np.asarray(pc_weights, dtype=np.float64)))
    return k % 12, MODES[k // 12]


class KeyTracker:
    """The key a row's notes so far establish, kept incrementally: each call walks only the ids added since the
    last one and adds each pitched note's duration (ticks, at least one) to its pitch class; drums and control
    triplets are skipped. None until ESTABLISHED_NOTES pitched notes have sounded."""

    def __init__(self) -> None:
        self.seen = 0  # ids walked (whole triplets)
        self.notes = 0
        self.weights = np.zeros(12)

    def update(self, tokens: Sequence[int]) -> tuple[int, str] | None:
        n = len(tokens)
        if n < self.seen:  # the row's ids were re-based (a new window): start over
            self.seen, self.notes, self.weights = 0, 0, np.zeros(12)
        for i in range(self.seen, n - 2, 3):
            t, d, note = tokens[i], tokens[i + 1], tokens[i + 2]
            if not (0 <= t < DUR_OFFSET and DUR_OFFSET <= d < NOTE_OFFSET and NOTE_OFFSET <= note < REST):
                continue
            inst, pitch = divmod(note - NOTE_OFFSET, MAX_PITCH)
            if inst == DRUMS:
                continue
            self.weights[pitch % 12] += max(1, d - DUR_OFFSET)
            self.notes += 1
        self.seen = max(self.seen, n - (n - self.seen) % 3)
        return profile_key(self.weights) if self.notes >= ESTABLISHED_NOTES else None


@dataclass(frozen=True)
class MelodyContext:
    """What the melodic-motion bias needs of a row at its note slot (`melody_context`)."""

    duration: int  # ticks of the note being drawn: AMT draws a note's duration before its pitch
    previous: dict[int, int]  # instrument -> its top pitch at its latest earlier onset (only instruments whose
    # top note at the current onset is still to come: none of their notes here lies within a step below it)


def melody_context(tokens: Sequence[int], onset: int) -> MelodyContext | None:
    """The melodic context of the note about to be drawn at `onset`, from a row's AMT ids so far (they end with
    its time and duration ids; control triplets are skipped), looking back `_MELODY_LOOKBACK` events; None
    when the ids do not end with a duration."""
    n = len(tokens)
    if n < 2 or not DUR_OFFSET <= tokens[-1] < NOTE_OFFSET:
        return None
    current: dict[int, int] = {}  # instrument -> top pitch at the current onset so far
    earlier: dict[int, tuple[int, int]] = {}  # instrument -> (its latest earlier onset, top pitch there)
    for i in range(n - 5, max(-1, n - 5 - 3 * _MELODY_LOOKBACK), -3):
        t, note = tokens[i], tokens[i + 2]
        if not (0 <= t < DUR_OFFSET and NOTE_OFFSET <= note < REST):
            continue
        inst, pitch = divmod(note - NOTE_OFFSET, MAX_PITCH)
        if inst == DRUMS:
            continue
        if t == onset:
            current[inst] = max(current.get(inst, -1), pitch)
            continue
        seen = earlier.get(inst)
        if seen is None or seen[0] == t:
            earlier[inst] = (t, pitch if seen is None else max(seen[1], pitch))
    previous = {inst: top for inst, (_, top) in earlier.items() if current.get(inst, -1) < top - max(MELODY_STEPS)}
    return MelodyContext(int(tokens[-1]) - DUR_OFFSET, previous)


def melody_bias(context: MelodyContext, config: SteeringConfig) -> np.ndarray | None:
    """(129, 128) bias over (instrument, pitch) for a note in `context`: for each instrument with a previous
    top note, +step_strength on the pitches a step of the key's (natural) scale away from it, -step_strength
    on that pitch itself; None when nothing applies (control off, no previous note, or a note of
    MELODY_MAX_BEATS quarter notes or more, which keeps the key prior's triad pull)."""
    if not config.steps_on or not context.previous or context.duration >= MELODY_MAX_BEATS * config.beat_ticks:
        return None
    in_scale = _scale_mask(config.key)
    strength = config.step_strength
    table = np.zeros((DRUMS + 1, MAX_PITCH))
    for inst, top in context.previous.items():
        table[inst, top] -= strength
        for step in MELODY_STEPS:
            if 0 <= top + step < MAX_PITCH and in_scale[(top + step) % 12]:
                table[inst, top + step] += strength
    return table


def instrument_counts(tokens: Sequence[int]) -> np.ndarray:
    """(129,) notes per instrument among a row's last BALANCE_LOOKBACK events (control triplets skipped)."""
    counts = np.zeros(DRUMS + 1)
    n = len(tokens) - len(tokens) % 3  # whole triplets: at a note slot the ids end with a time and a duration
    for i in range(n - 3, max(-1, n - 3 - 3 * BALANCE_LOOKBACK), -3):
        t, note = tokens[i], tokens[i + 2]
        if 0 <= t < DUR_OFFSET and NOTE_OFFSET <= note < REST:
            counts[(note - NOTE_OFFSET) // MAX_PITCH] += 1
    return counts


def balance_bias(counts: np.ndarray, config: SteeringConfig) -> np.ndarray | None:
    """(129,) bias per instrument: S * clip(log(fair share / recent share), -1, 1) for each asked-for
    instrument (shares among the asked-for ones' notes, smoothed by BALANCE_PRIOR_NOTES pseudo-notes at the
    fair shares); 0 elsewhere. None when the control is off."""
    if not config.balance_on:
        return None
    named = np.array(config.instruments)
    weight = np.where(named == DRUMS, BALANCE_DRUM_WEIGHT, 1.0)
    fair = weight / weight.sum()
    recent = counts[named]
    share = (recent + BALANCE_PRIOR_NOTES * fair) / (recent.sum() + BALANCE_PRIOR_NOTES)
    out = np.zeros(DRUMS + 1)
    out[named] = config.balance_strength * np.clip(np.log(fair / share), -1.0, 1.0)
    return out


def grid_bias(ticks: np.ndarray, last_onset: np.ndarray | int, config: SteeringConfig) -> np.ndarray:
    """Bias of candidate onset ticks toward the beat grid (`SteeringConfig.grid_levels`): 0 on a beat, -0.1 s on
    an eighth, -0.2 s on a sixteenth, -s off the grid (s = grid_strength), Gaussian around each grid point; a
    candidate equal to the row's `last_onset` (one more note of the same chord) gets 0, and one less than half
    a sixteenth after it (a flam: the same grid point again) counts as off the grid. Broadcasts ticks against
    last_onset."""
    ticks = np.asarray(ticks, dtype=np.float64)
    quarter = config.beat_ticks
    levels = config.grid_levels
    sixteenth = quarter * levels[-1][0]  # the finest level
    sigma = max(1.0, GRID_SIGMA_FRACTION * sixteenth)
    pos = ticks - config.grid_origin
    score = np.zeros(np.broadcast_shapes(ticks.shape, np.shape(last_onset)))
    for quarters, weight in levels:
        period = quarter * quarters
        d = pos - period * np.round(pos / period)
        score = np.maximum(score, weight * np.exp(-0.5 * (d / sigma) ** 2))
    since = ticks - np.asarray(last_onset)
    score = np.where(since < sixteenth / 2, 0.0, score)
    bias = -config.grid_strength * (1.0 - score)
    return np.where(since == 0, 0.0, bias).astype(np.float32)


def duration_bias(durations: np.ndarray, onset: int, config: SteeringConfig) -> np.ndarray:
    """Bias of candidate durations (ticks) of a note starting at `onset`: -SYNCOPATION_WEIGHT * grid_strength
    for one that starts off the meter's beat and rings across the next beat, 0 otherwise."""
    durations = np.asarray(durations, dtype=np.float64)
    beat = config.beat_ticks * config.grid_levels[0][0]
    pos = (onset - config.grid_origin) / beat
    frac = pos - math.floor(pos)
    if frac <= _OFF_BEAT or frac >= 1.0 - _OFF_BEAT:
        return np.zeros(durations.shape, dtype=np.float32)
    next_beat = config.grid_origin + (math.floor(pos) + 1) * beat
    across = onset + durations >= next_beat + _ACROSS * beat
    return np.where(across, -SYNCOPATION_WEIGHT * config.grid_strength, 0.0).astype(np.float32)


def sustain_bias(durations: np.ndarray, config: SteeringConfig) -> np.ndarray:
    """Bias of candidate durations (ticks) toward notes that last a beat: -sustain_strength * (1 - d / beat)
    for a duration d under a beat (a quarter note at the grid's tempo), 0 from a beat on."""
    short = 1.0 - np.asarray(durations, dtype=np.float64) / config.beat_ticks
    return (-config.sustain_strength * np.clip(short, 0.0, 1.0)).astype(np.float32)


def _duration_bias(durations: np.ndarray, onset: int, config: SteeringConfig) -> np.ndarray:
    bias = duration_bias(durations, onset, config) if config.grid_on else np.zeros(len(durations), np.float32)
    return bias + sustain_bias(durations, config) if config.sustain_on else bias


def gap_bias(ticks: np.ndarray, last_onset: np.ndarray | int, config: SteeringConfig) -> np.ndarray:
    """-gap_strength per beat (quarter note) that an onset lies beyond `max_gap_beats` after the row's last
    onset; 0 up to there. Broadcasts ticks against last_onset."""
    beat = config.beat_ticks
    excess = (np.asarray(ticks, dtype=np.float64) - np.asarray(last_onset)) / beat - config.max_gap_beats
    return (-config.gap_strength * np.maximum(excess, 0.0)).astype(np.float32)


def block_bias(lo: int, hi: int, last_onset: int, config: SteeringConfig, melody: MelodyContext | None = None,
               established: tuple[int, str] | None = None) -> np.ndarray | None:
    """(hi - lo,) bias over the AMT ids [lo, hi) for one row, or None when no control touches that block.
    `established`: the key the row's notes establish (`KeyTracker`), steered toward only when config has none."""
    if not config.biased or hi <= lo:
        return None
    bias = None
    t_lo, t_hi = max(lo, 0), min(hi, DUR_OFFSET)
    if t_hi > t_lo and (config.grid_on or config.gap_on):
        bias = np.zeros(hi - lo, dtype=np.float32)
        ticks = np.arange(t_lo, t_hi)
        if config.grid_on:
            bias[t_lo - lo : t_hi - lo] += grid_bias(ticks, last_onset, config)
        if config.gap_on:
            bias[t_lo - lo : t_hi - lo] += gap_bias(ticks, last_onset, config)
    d_lo, d_hi = max(lo, DUR_OFFSET), min(hi, NOTE_OFFSET)
    if d_hi > d_lo and (config.grid_on or config.sustain_on):
        if bias is None:
            bias = np.zeros(hi - lo, dtype=np.float32)
        bias[d_lo - lo : d_hi - lo] += _duration_bias(np.arange(d_lo, d_hi) - DUR_OFFSET, last_onset, config)
    n_lo, n_hi = max(lo, NOTE_OFFSET), min(hi, REST)
    note_bias_row = _note_block_bias(config, melody, established) if n_hi > n_lo and config.notes_on else None
    if note_bias_row is not None:
        part = note_bias_row[n_lo - NOTE_OFFSET : n_hi - NOTE_OFFSET]
        if bias is None and (n_lo, n_hi) == (lo, hi):
            return part  # the note slot: the cached array itself, no copy, when only the key prior applies
        if bias is None:
            bias = np.zeros(hi - lo, dtype=np.float32)
        bias[n_lo - lo : n_hi - lo] += part
    return bias


def _note_block_bias(config: SteeringConfig, melody: MelodyContext | None,
                     established: tuple[int, str] | None = None) -> np.ndarray | None:
    """(16512,) bias over the note ids: the key prior, or without a key the established key's scale (the shared
    cached arrays when nothing else applies), plus the melodic-motion bias; None when nothing applies."""
    if config.key_on:
        base = note_bias(config.key, config.key_strength)
    elif config.established_on and established is not None:
        base = scale_note_bias(established, config.established_strength)
    else:
        base = None
    extra = None if melody is None else melody_bias(melody, config)
    if extra is None:
        return base
    return extra.reshape(-1) if base is None else base + extra.reshape(-1)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis; -inf for an all -inf row."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - m).sum(axis=-1)) + m[..., 0]


def _reshape_within(x: np.ndarray, bias: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """x + bias on the ids in `keep` (boolean, same shape), shifted per row (last axis) so that the total
    probability of those ids stays what it was: steering reshapes a choice, never its share."""
    inside = np.where(keep, x, -np.inf)
    before, after = _logsumexp(inside), _logsumexp(inside + bias)
    with np.errstate(invalid="ignore"):  # a row with nothing allowed: -inf - -inf, replaced by 0
        shift = np.where(np.isfinite(before) & np.isfinite(after), before - after, 0.0)
    return x + np.where(keep, bias + shift[..., None], 0.0)


def steer_logits(logits, lo: int, last_onset: int, config: SteeringConfig, melody: MelodyContext | None = None,
                 established: tuple[int, str] | None = None, balance: np.ndarray | None = None):
    """A row's logits over AMT ids [lo, lo + len(logits)) with the biases applied (numpy or torch; a new
    array, the input is left alone; with no control touching the block the input comes back as is).
    `melody`: the row's melodic context at a note slot (`melody_context`), for the melodic-motion bias;
    `established`: the key the row's notes so far establish (`KeyTracker`), used only when config has no key;
    `balance`: (129,) per-instrument bias at a note slot (`balance_bias`).

    Each bias but the instrument balance only reshapes a choice the model has made: the time biases move mass
    among later onsets, keeping the probability of another note at the current onset (a chord) as the model
    gave it; the grid moves a duration's mass off the lengths that would ring an off-beat note across the next
    beat; the key prior and the melodic-motion bias move mass among the pitches of each instrument, keeping
    each instrument's share (and drums'). The balance moves mass between the asked-for instruments.
    """
    if not isinstance(logits, np.ndarray):
        import torch

        row = logits.detach().cpu().numpy()
        out = steer_logits(row, lo, last_onset, config, melody, established, balance)
        return logits if out is row else torch.as_tensor(out, device=logits.device, dtype=logits.dtype)
    hi = lo + int(logits.shape[-1])
    if not config.biased or hi <= lo:
        return logits
    out = None
    t_lo, t_hi = max(lo, 0), min(hi, DUR_OFFSET)
    if t_hi > t_lo and (config.grid_on or config.gap_on):
        ticks = np.arange(t_lo, t_hi)
        out = np.array(logits, dtype=np.float64)
        out[t_lo - lo : t_hi - lo] = _reshape_within(out[t_lo - lo : t_hi - lo], _time_bias(ticks, last_onset, config),
                                                    ticks != last_onset)
    d_lo, d_hi = max(lo, DUR_OFFSET), min(hi, NOTE_OFFSET)
    if d_hi > d_lo and (config.grid_on or config.sustain_on):
        if out is None:
            out = np.array(logits, dtype=np.float64)
        out[d_lo - lo : d_hi - lo] += _duration_bias(np.arange(d_lo, d_hi) - DUR_OFFSET, last_onset, config)
    n_lo, n_hi = max(lo, NOTE_OFFSET), min(hi, REST)
    note_bias_row = _note_block_bias(config, melody, established) if n_hi > n_lo and config.notes_on else None
    if note_bias_row is not None:
        if out is None:
            out = np.array(logits, dtype=np.float64)
        notes = np.full(REST - NOTE_OFFSET, -np.inf)  # a partial note range is padded to whole instruments
        notes[n_lo - NOTE_OFFSET : n_hi - NOTE_OFFSET] = out[n_lo - lo : n_hi - lo]
        grid = notes.reshape(DRUMS + 1, MAX_PITCH)
        bias = note_bias_row.reshape(DRUMS + 1, MAX_PITCH)
        steered = _reshape_within(grid, bias, np.ones_like(grid, dtype=bool)).reshape(-1)
        out[n_lo - lo : n_hi - lo] = steered[n_lo - NOTE_OFFSET : n_hi - NOTE_OFFSET]
    if balance is not None and n_hi > n_lo:
        if out is None:
            out = np.array(logits, dtype=np.float64)
        per_note = np.repeat(balance, MAX_PITCH)  # (instrument, pitch) order of the note ids
        out[n_lo - lo : n_hi - lo] += per_note[n_lo - NOTE_OFFSET : n_hi - NOTE_OFFSET]
    return logits if out is None else out.astype(logits.dtype, copy=False)


def _time_bias(ticks: np.ndarray, last_onset, config: SteeringConfig) -> np.ndarray:
    bias = np.zeros(np.broadcast_shapes(np.shape(ticks), np.shape(last_onset)), dtype=np.float64)
    if config.grid_on:
        bias += grid_bias(ticks, last_onset, config)
    if config.gap_on:
        bias += gap_bias(ticks, last_onset, config)
    return bias


def steer_time_rows(logits: np.ndarray, lo: np.ndarray, last_onset: np.ndarray, config: SteeringConfig) -> np.ndarray:
    """Batched time slot: (n, W) logits whose row r covers ticks lo[r] .. lo[r] + W - 1 (pad with -inf),
    all rows under one config; the same as `steer_logits` row by row (a new array)."""
    if not (config.grid_on or config.gap_on):
        return logits
    ticks = np.asarray(lo)[:, None] + np.arange(logits.shape[-1])[None, :]
    last = np.asarray(last_onset)[:, None]
    out = _reshape_within(np.asarray(logits, dtype=np.float64), _time_bias(ticks, last, config), ticks != last)
    return out.astype(logits.dtype, copy=False)


# --- classifier-free guidance ----------------------------------------------------------------------


def cfg_mix(cond, uncond, scale: float):
    """uncond + scale * (cond - uncond), over the same block (numpy or torch, any shape). Scale 1 returns
    `cond` itself; an id masked out (-inf) in `cond` stays masked, whatever `uncond` says."""
    if scale == 1.0:
        return cond
    if isinstance(cond, np.ndarray):
        uncond = np.asarray(uncond, dtype=cond.dtype)
        with np.errstate(invalid="ignore"):
            mixed = uncond + scale * (cond - uncond)
        return np.where(np.isfinite(cond) & np.isfinite(mixed), mixed, -np.inf).astype(cond.dtype, copy=False)
    import torch

    mixed = uncond + scale * (cond - uncond)
    return torch.where(torch.isfinite(cond) & torch.isfinite(mixed), mixed, torch.full_like(cond, -math.inf))


def steering_processor(config: SteeringConfig):
    """The engine's logits hook (`engine.Row.processors`) for one request: CFG first where the row runs an
    unconditioned branch (`row.uncond_logits`), then the biases on the row's grammar clock; the grid stays
    on the absolute beat grid across windows (`row.offset`: the window's start in absolute ticks); melodic
    steps read the row's ids so far (`row.seq.tokens`) at each note slot, and so does the established key (a
    `KeyTracker` per row, walking only the new ids; a row starts over in each window). The processor carries its
    `config`, from which a backend with its own sampling loop (vLLM) rebuilds it."""
    by_offset: dict[int, SteeringConfig] = {}
    # id(row) -> (row, its KeyTracker); the row is kept so that its id is not reused while the processor (one
    # request's) lives
    trackers: dict[int, tuple[object, KeyTracker]] = {}

    def apply(row, choice, logits: np.ndarray) -> np.ndarray:
        uncond = getattr(row, "uncond_logits", None)
        if config.cfg_scale != 1.0 and uncond is not None:
            logits = cfg_mix(logits, uncond, config.cfg_scale)
        if not config.biased:
            return logits
        offset = int(getattr(row, "offset", 0))
        if offset not in by_offset:
            by_offset[offset] = shifted(config, offset)
        melody = established = balance = None
        if choice.lo <= NOTE_OFFSET < choice.hi:
            if config.steps_on:
                melody = melody_context(row.seq.tokens, row.seq.state.time)
            if config.established_on:
                _, tracker = trackers.setdefault(id(row), (row, KeyTracker()))
                established = tracker.update(row.seq.tokens)
            if config.balance_on:
                balance = balance_bias(instrument_counts(row.seq.tokens), config)
        return steer_logits(logits, choice.lo, row.seq.state.time, by_offset[offset], melody, established, balance)

    apply.config = config  # a backend that runs its own loop (vLLM) rebuilds the processor from this
    return apply


def unconditioned_prompt(layout) -> str:
    """The text of the unconditioned branch: MIDI-LLM's instruction with no description, as the SFT's
    caption dropout wrote it (`MusicLayout.prompt_text(None)`)."""
    return layout.prompt_text(None)

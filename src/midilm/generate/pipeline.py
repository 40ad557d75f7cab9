"""Text -> MIDI files: read what the prompt asks for, plan the samples, run them, decode, write the outputs.

Instruments and tempo named in the prompt become constraints (an instrument allow-list, or a deny-list
when the prompt rules instruments out) and the output grid; explicit options override them. Every request
(`generate` here, `generate_many` for the server's batches) becomes a `schedule.Job` whose samples are
written window by window by the one engine, so a request gets the same tokens however it arrives.

A given piece (`given`: a piece to continue, or the melody to accompany) keeps its notes, tempo map and
meter: the new notes are placed on its clock. Otherwise the output is lined up to a tempo: the option,
else the prompt's, else one estimated from the generated notes. Beside each MIDI file go the tokens and
a JSON sidecar of the settings, and on request a WAV (FluidSynth) and a piano-roll PNG.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from midilm.codecs.amt.decode import (
    DEFAULT_VELOCITY,
    DecodedNotes,
    DecodeReport,
    limit_instruments,
    notes_to_piece,
    parse_events,
)
from midilm.codecs.amt.lines import instruments_of
from midilm.codecs.amt.vocab import ANTICIPATE, CONTROL_OFFSET, MAX_TIME, TIME_RESOLUTION
from midilm.generate.grammar import GrammarConfig
from midilm.generate.sampler import SamplingConfig, row_seeds
from midilm.generate.schedule import Job, Sample, run_jobs
from midilm.generate.steering import (
    DEFAULT_BPM,
    OFF,
    SteeringConfig,
    default_seconds,
    derive_steering,
    steering_processor,
)
from midilm.music.gm import DRUMS, plain_name, program_from_word, program_name

# a representative bpm for each tempo word a prompt may use (the middle of its Italian bin)
TEMPO_WORD_BPM = {
    "grave": 35, "largo": 50, "lento": 50, "adagio": 65, "andante": 80, "moderato": 100, "allegretto": 110,
    "allegro": 125, "vivace": 150, "presto": 185, "prestissimo": 220, "slow": 65, "moderate": 100,
    "medium tempo": 100, "fast": 130, "very fast": 175, "upbeat": 125, "laid-back": 85,
    # "slow" and "fast" sit where the captions put them: annotate/captions.tempo_simple writes "fast" for
    # 120-160 bpm and "slow" below 80, and most training pieces so described play at 110-140 and 60-70 bpm
    # the glosses the dataset's captions use (annotate/captions.py)
    "moderately paced": 100, "walking-pace": 80, "very slow": 50, "lively": 150, "extremely fast": 220,
}  # fmt: skip
_BPM = re.compile(r"(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute|beats a minute)", re.IGNORECASE)
_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, TEMPO_WORD_BPM), key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)
_METER = re.compile(r"\b(\d{1,2})/(2|4|8|16)\b")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", re.IGNORECASE)
NEGATORS = frozenset({"without", "no", "not", "nor", "excluding", "except", "minus", "sans"})
LIST_WORDS = frozenset({"or", "nor", "and"})  # "without drums or bass": both ruled out
CLAUSE_WORDS = frozenset({"with", "but", "featuring", "plus", "just", "only", "then", "over", "under"})
MAX_FILLER = 2  # words allowed between a negation and its instrument ("without any heavy drums")

MAX_SECONDS = 1800.0  # a piece without a requested length stops at its token budget or here
PRESETS = {
    # MIDI-LLM's release: temperature 1.0, top-p 0.98, 2,046 new tokens, any music id, no grammar
    "midi-llm": {"temperature": 1.0, "top_p": 0.98, "top_k": 0, "max_tokens": 2046, "constrained": False,
                 "seconds": None, "use_prompt_instruments": False, "instruments": None, "steer": False,
                 "key_prior": None, "beat_grid": None, "gap_penalty": None, "cfg": None,
                 "melody_steps": None, "sustain": None, "established_key": None, "balance": None,
                 "default_length": False},
}


@dataclass
class PromptControls:
    instruments: list[int] = field(default_factory=list)  # named and not ruled out, in order of mention
    excluded: list[int] = field(default_factory=list)  # ruled out ("without drums", "no guitar", "drum-free")
    bpm: float | None = None
    time_signature: tuple[int, int] | None = None


# "beat" names drums as a noun for a drum pattern ("a hip hop beat"), not as the pulse: "on the beat", "every
# beat", "90 beats per minute", "three beats to the bar"
_PULSE_BEFORE = frozenset({
    "the", "every", "each", "per", "of", "on", "off", "down", "strong", "weak", "main", "half", "quarter", "eighth",
    "sixteenth", "dotted", "first", "second", "third", "fourth", "last", "few", "several", "many", "some", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve",
})  # fmt: skip
_PULSE_AFTER = frozenset({"per", "a", "an", "to", "in", "of"})


def _beat_is_rhythm(words: list[str], i: int) -> bool:
    before = words[i - 1] if i else ""
    after = words[i + 1] if i + 1 < len(words) else ""
    return before in _PULSE_BEFORE or before.isdigit() or after in _PULSE_AFTER


def _mentions(prompt: str) -> list[tuple[int, int, int, bool]]:
    """(first word, last word, program, ruled out) of each instrument named in a prompt, longest phrase first."""
    words = [m.group(0).lower() for m in _TOKEN.finditer(prompt)]
    seps = [prompt[a.end() : b.start()] for a, b in zip(_TOKEN.finditer(prompt), list(_TOKEN.finditer(prompt))[1:])]
    free = [w.endswith("-free") for w in words]
    words = [w[: -len("-free")] if f else w for w, f in zip(words, free)]
    out: list[tuple[int, int, int, bool]] = []
    i = 0
    while i < len(words):
        for n in (3, 2, 1):
            phrase = " ".join(words[i : i + n])
            if len(words[i : i + n]) < n or phrase.isdigit():
                continue
            # "bass" or "violins" alone, not "b" or "fast"; the phrase must not run over a clause break
            if any(re.search(r"[.;:!?()]", sep) for sep in seps[i : i + n - 1]):
                continue
            try:
                program = program_from_word(phrase)
            except ValueError:
                continue
            if phrase in ("beat", "beats") and _beat_is_rhythm(words, i):
                continue
            end = i + n - 1
            out.append((i, end, program, free[end]))  # "drum-free"; not "guitar free jazz"
            i = end
            break
        i += 1
    # a negation rules out the instrument that follows it (a few words later at most, in the same clause),
    # and the ones listed after that one with "or", "nor" or "and"
    negated = [False] * len(out)
    for k, (first, _, _, _) in enumerate(out):
        prev_end = out[k - 1][1] if k else -1
        gap = words[prev_end + 1 : first]
        breaks = [re.search(r"[.;:!?()]", s) for s in seps[prev_end + 1 if prev_end >= 0 else 0 : first]]
        neg_at = max((j for j, w in enumerate(gap) if w in NEGATORS), default=None)
        if neg_at is not None:
            between = gap[neg_at + 1 :]
            if len(between) <= MAX_FILLER and not CLAUSE_WORDS & set(between) and not any(breaks[neg_at:]):
                negated[k] = True
        elif k and negated[k - 1] and len(gap) == 1 and gap[0] in LIST_WORDS and not any(breaks):
            negated[k] = True
    return [(a, b, p, r or neg) for (a, b, p, r), neg in zip(out, negated)]


def read_prompt(prompt: str) -> PromptControls:
    """Instruments, tempo and meter a prompt names ("a 90 bpm waltz in 3/4 for violin and piano"), with the
    instruments it rules out ("without drums", "no guitar", "a drum-free ballad") kept apart."""
    controls = PromptControls()
    for _, _, program, ruled_out in _mentions(prompt):
        target = controls.excluded if ruled_out else controls.instruments
        if program not in target:
            target.append(program)
    controls.instruments = [p for p in controls.instruments if p not in controls.excluded]
    m = _BPM.search(prompt)
    if m and 20 <= float(m.group(1)) <= 400:
        controls.bpm = float(m.group(1))
    else:
        w = _WORD.search(prompt)
        if w:
            controls.bpm = float(TEMPO_WORD_BPM[w.group(1).lower()])
    m = _METER.search(prompt)
    if m:
        controls.time_signature = (int(m.group(1)), int(m.group(2)))
    elif re.search(r"\bwaltz\b", prompt, re.IGNORECASE):
        controls.time_signature = (3, 4)
    return controls


@dataclass
class GenerateOptions:
    seed: int | None = None
    max_tokens: int = 2046
    seconds: float | None = None  # of new music (a continuation's given part does not count)
    bpm: float | None = None
    time_signature: tuple[int, int] | None = None
    instruments: list[str] | None = None  # words or GM numbers; overrides the prompt's
    n: int = 1
    temperature: float = 1.0
    top_p: float = 0.98
    top_k: int = 0
    max_notes_per_onset: int = 16
    constrained: bool = True
    use_prompt_instruments: bool = True
    preset: str | None = None
    # steering (generate/steering.py), on by default where the prompt or these options give it a target;
    # strengths in nats, None: the default, 0: off
    steer: bool = True  # False: the model alone (a strength given explicitly still applies)
    key: str | None = None  # the key to steer toward ("F# minor"); default: the prompt's
    key_prior: float | None = None
    beat_grid: float | None = None
    gap_penalty: float | None = None  # per beat past max_gap_beats
    max_gap_beats: float | None = None
    cfg: float | None = None  # classifier-free guidance scale (1: off)
    melody_steps: float | None = None  # short notes drawn to a scale step from their previous top note
    sustain: float | None = None  # durations under a beat lose up to this much
    established_key: float | None = None  # no key given: tones outside the key the notes establish lose this
    balance: float | None = None  # two or more instruments asked for: each drawn toward a fair share of the notes
    default_length: bool = True  # without `seconds`, a piece of the length the prompt implies (steering.py)

    def with_preset(self) -> GenerateOptions:
        """These options with the preset's settings applied (the preset wins)."""
        if self.preset is None:
            return self
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        return replace(self, **PRESETS[self.preset])


@dataclass
class InstrumentChoice:
    """What the grammar allows, and why, for the sidecar and the one-line notice."""

    allowed: list[int] | None  # allow-list of programs; None: every program not in `excluded`
    excluded: list[int]
    source: str  # "option", "prompt", "prompt rules out" or "none"

    @property
    def grammar_list(self) -> list[int] | None:
        if self.allowed is not None:
            return self.allowed
        if self.excluded:
            return [p for p in range(DRUMS + 1) if p not in self.excluded]
        return None

    def notice(self) -> str:
        names = lambda ps: ", ".join(plain_name(p) for p in ps)  # noqa: E731
        if self.source == "option":
            return f"instruments: {names(self.allowed)} (--instruments)"
        if self.source == "prompt":
            return f"instruments: {names(self.allowed)} (named in the prompt)"
        if self.source == "prompt rules out":
            return f"instruments: any but {names(self.excluded)} (the prompt rules them out)"
        if self.source == "preset":
            return "instruments: any (preset: no grammar)"
        return "instruments: any (the prompt names none)"

    def as_dict(self) -> dict:
        return {"instruments": self.allowed, "instruments_excluded": self.excluded,
                "instruments_source": self.source, "instruments_notice": self.notice()}


def choose_instruments(controls: PromptControls, options: GenerateOptions) -> InstrumentChoice:
    """Explicit --instruments first; else the prompt's: what it names (minus what it rules out) when it rules
    nothing out, and everything but what it rules out when it does (a prompt that excludes instruments
    describes the piece, it does not list every instrument it wants)."""
    if options.instruments:
        return InstrumentChoice([program_from_word(w) for w in options.instruments], [], "option")
    if not options.constrained:
        return InstrumentChoice(None, [], "preset" if options.preset else "none")
    if not options.use_prompt_instruments:
        return InstrumentChoice(None, [], "none")
    if controls.excluded:
        return InstrumentChoice(None, list(controls.excluded), "prompt rules out")
    if controls.instruments:
        return InstrumentChoice(list(controls.instruments), [], "prompt")
    return InstrumentChoice(None, [], "none")


def resolve_settings(prompt: str, options: GenerateOptions) -> tuple[list[int] | None, float | None, tuple | None]:
    """The instrument allow-list, bpm and meter to use: explicit options first, then the prompt."""
    controls = read_prompt(prompt)
    choice = choose_instruments(controls, options)
    return choice.grammar_list, options.bpm or controls.bpm, options.time_signature or controls.time_signature


@dataclass
class Generation:
    piece: object  # Piece
    tokens: list[int]
    report: DecodeReport
    settings: dict


@dataclass
class Request:
    """One prompt to sample: its options, and optionally a piece to continue or a melody to accompany.

    `given` is the Piece whose notes, tempo map and meter the output keeps (the piece to continue, or the
    melody); `context` its AMT events (absolute times) for continuation, `controls` the melody's AMT
    control triplets for accompaniment. `context` without `given` (events alone) is decoded with the new
    music on the output's tempo grid. `stop()` says the caller no longer waits. `processors` are the
    engine's logits hooks for every row (`engine.Row`); with `uncond_caption` (e.g. "" for MIDI-LLM's prompt
    without a description) each row also runs that prompt, whose logits the processors see as
    `row.uncond_logits` (classifier-free guidance: `engine.guidance(scale)`)."""

    prompt: str
    options: GenerateOptions = field(default_factory=GenerateOptions)
    context: Sequence[int] = ()
    controls: Sequence[int] = ()
    given: object | None = None
    stop: Callable[[], bool] | None = None
    processors: Sequence = ()
    uncond_caption: str | None = None


def estimate_bpm(piece) -> float | None:
    """Tempo of generated notes (written at 120 bpm), estimated from the onsets."""
    try:
        from midilm.annotate.rhythm import estimate_tempo_from_notes
    except ImportError:
        return None
    bpm = estimate_tempo_from_notes(piece)
    return float(bpm) if 30 <= bpm <= 300 else None


@dataclass
class _Plan:
    request: Request
    options: GenerateOptions
    choice: InstrumentChoice
    bpm: float | None
    meter: tuple[int, int] | None
    seed: int
    job: Job
    steering: SteeringConfig = OFF
    steering_note: str = "off"
    length: dict = field(default_factory=dict)


def balanced_instruments(choice: InstrumentChoice, req: Request) -> list[int] | None:
    """The instruments the instrument balance shares the notes among: the asked-for ones, less any that the
    given melody plays (accompaniment must not be pushed to double it)."""
    if choice.allowed is None:
        return None
    given = set(instruments_of(req.controls)) if req.controls else set()
    return [p for p in choice.allowed if p not in given]


def plan_steering(model, req: Request, options: GenerateOptions, bpm: float | None, meter: tuple[int, int] | None,
                  instruments: Sequence[int] | None = None) -> tuple[SteeringConfig, str]:
    """The request's steering and a note on it: a given piece's own tempo and meter set the grid; `instruments`
    are the asked-for ones (the instrument balance's). On vLLM the
    biases run in its logits processor (`backends/vllm.py`); guidance cannot, and is refused there."""
    if req.given is not None:
        ts = req.given.time_signature
        bpm, meter = float(req.given.bpm), (ts.numerator, ts.denominator)
    steering = derive_steering(req.prompt, key=options.key, bpm=bpm, meter=meter, steer=options.steer,
                               key_strength=options.key_prior, grid_strength=options.beat_grid,
                               gap_strength=options.gap_penalty, max_gap_beats=options.max_gap_beats,
                               cfg_scale=options.cfg, step_strength=options.melody_steps,
                               sustain_strength=options.sustain, established_strength=options.established_key,
                               balance_strength=options.balance, instruments=instruments)
    if steering.cfg_scale != 1.0 and getattr(model, "backend", "transformers") == "vllm":
        raise ValueError(f"cfg {steering.cfg_scale:g}: classifier-free guidance needs the transformers or llamacpp "
                         "backend (it runs an unconditioned second pass per sample, which vLLM's logits processors "
                         "cannot); leave --cfg at 1 on vllm")
    return steering, "on" if steering.active else "off"


def plan_length(prompt: str, options: GenerateOptions, bpm: float | None, meter: tuple[int, int] | None,
                open_ended: bool) -> tuple[float, dict]:
    """Seconds of new music to write, and where that figure comes from (for the sidecar)."""
    if options.seconds is not None:
        return options.seconds, {"seconds": options.seconds, "source": "option"}
    if options.default_length and options.constrained and open_ended:
        seconds = default_seconds(prompt, bpm, meter)
        return seconds, {"seconds": seconds, "source": "default for the prompt"}
    return MAX_SECONDS, {"seconds": None, "source": "token budget"}


def _plan(model, req: Request) -> _Plan:
    options = req.options.with_preset()
    if len(req.prompt) > 4000:
        raise ValueError(f"prompt is {len(req.prompt)} characters, over the 4000 limit")
    if req.context and req.controls:
        raise ValueError("a piece to continue and a melody to accompany cannot be combined")
    sampling = SamplingConfig(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
                              max_new_tokens=options.max_tokens, seconds=options.seconds, n=options.n,
                              seed=options.seed, constrained=options.constrained)
    sampling.validate()
    controls = read_prompt(req.prompt)
    choice = choose_instruments(controls, options)
    grammar = GrammarConfig.make(choice.grammar_list, max_notes_per_onset=options.max_notes_per_onset)
    bpm, meter = options.bpm or controls.bpm, options.time_signature or controls.time_signature
    steering, steering_note = plan_steering(model, req, options, bpm, meter, balanced_instruments(choice, req))
    processors = list(req.processors)
    uncond_caption = req.uncond_caption
    if steering.active:
        processors.insert(0, steering_processor(steering))
        if steering.cfg_scale != 1.0 and uncond_caption is None:
            uncond_caption = ""  # MIDI-LLM's prompt without a description: the SFT's caption dropout
    prompt_ids = model.prompt_ids(req.prompt)
    uncond = None if uncond_caption is None else model.prompt_ids(uncond_caption)
    if req.controls:
        flag = model.layout.music_id(ANTICIPATE)
        prompt_ids = prompt_ids[:-1] + [flag]
        uncond = None if uncond is None else uncond[:-1] + [flag]
    context = [int(t) for t in req.context]
    start = max(context[0::3], default=0)
    seconds, length = plan_length(req.prompt, options, bpm or (steering.bpm if steering.grid_on else None), meter,
                                  open_ended=not context and not req.controls)
    end = start + int(round(seconds * TIME_RESOLUTION)) - (0 if context else 1)
    if req.controls:  # the whole melody is accompanied, however long it is
        end = max(end, max(t - CONTROL_OFFSET for t in req.controls[0::3]) + TIME_RESOLUTION)
    if not options.constrained:
        end = MAX_TIME - 1  # MIDI-LLM's own sampling: one sequence, no windows
    seed, seeds = row_seeds(options.seed, options.n)
    job = Job(prompt_ids, sampling, grammar, seeds, start, end, context, [int(t) for t in req.controls],
              processors=tuple(processors), uncond_prompt=uncond, stop=req.stop)
    return _Plan(req, options, choice, bpm, meter, seed, job, steering, steering_note, length)


def generate_many(model, requests: list[Request]) -> list[list[Generation]]:
    """Every request's samples, all in one batch per window (`schedule.run_jobs`), decoded on their grids."""
    plans = [_plan(model, r) for r in requests]
    t0 = time.perf_counter()
    samples = run_jobs(model.model, [p.job for p in plans], model.layout.music_offset,
                       getattr(model, "max_positions", None), getattr(model, "stop_id", None))
    elapsed = time.perf_counter() - t0
    return [[_finish(model, plan, k, s, elapsed) for k, s in enumerate(out)] for plan, out in zip(plans, samples)]


def generate(model, prompt: str, options: GenerateOptions | None = None, context: Sequence[int] = (),
             controls: Sequence[int] = (), given=None, processors: Sequence = (),
             uncond_caption: str | None = None) -> list[Generation]:
    """Sample `options.n` pieces for a prompt with a loaded TextToMidiModel (on whichever backend it was
    loaded); the other arguments as in `Request`."""
    req = Request(prompt, options or GenerateOptions(), context, controls, given, processors=processors,
                  uncond_caption=uncond_caption)
    return generate_many(model, [req])[0]


def _merge(total: DecodeReport, part: DecodeReport) -> None:
    for f in fields(DecodeReport):
        a, b = getattr(total, f.name), getattr(part, f.name)
        if f.name == "segments":
            continue
        setattr(total, f.name, a + b)


def _new_notes(plan: _Plan, sample: Sample, report: DecodeReport) -> DecodedNotes:
    """The sample's new notes on the absolute clock, window by window: each window's ids are parsed as they
    were sampled (window-relative, so nothing folds) and moved by the window's start. Forced melody controls
    are left out: the melody's notes come from the given piece, each exactly once."""
    parts = []
    for offset, ids in sample.windows:
        if plan.options.constrained:
            trip = [ids[i : i + 3] for i in range(0, len(ids) - len(ids) % 3, 3)]
            ids = [x for t in trip if t[0] < CONTROL_OFFSET for x in t]
        part = DecodeReport()
        notes = parse_events(ids, part)
        _merge(report, part)
        parts.append(DecodedNotes(notes.start + offset, notes.duration, notes.instrument, notes.pitch))
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0, np.int64)  # noqa: E731
    return DecodedNotes(cat("start"), cat("duration"), cat("instrument"), cat("pitch"))


def _finish(model, plan: _Plan, k: int, sample: Sample, elapsed: float) -> Generation:
    req, options = plan.request, plan.options
    report = DecodeReport()
    notes = _new_notes(plan, sample, report)
    given = req.given
    if given is not None:
        piece = _on_given_clock(given, notes)
        bpm, bpm_source = float(given.bpm), "given piece"
        meter = given.time_signature
        meter = (meter.numerator, meter.denominator)
    else:
        if req.context:  # events alone: decoded on the grid with the new music
            ctx = parse_events(list(req.context), DecodeReport())
            notes = DecodedNotes(*(np.concatenate([getattr(ctx, f), getattr(notes, f)])
                                   for f in ("start", "duration", "instrument", "pitch")))
        notes, _ = limit_instruments(notes, report)
        meter = plan.meter or (4, 4)
        bpm, bpm_source = plan.bpm, "option" if options.bpm else "prompt" if plan.bpm else "estimated"
        if bpm is None and plan.steering.grid_on:  # the onsets were drawn to the default grid: decode on it
            bpm, bpm_source = DEFAULT_BPM, "steering grid (default)"
        if bpm is None:
            rough = notes_to_piece(notes, np.full(len(notes.pitch), DEFAULT_VELOCITY), 120.0, meter, 480,
                                   DecodeReport(), snap=False)
            bpm = estimate_bpm(rough) or 120.0
        piece = notes_to_piece(notes, np.full(len(notes.pitch), DEFAULT_VELOCITY), bpm, meter, 480, report)
    report.notes = len(notes.pitch)
    tokens = list(sample.events) if options.constrained else [t for _, w in sample.windows for t in w]
    settings = {
        "prompt": req.prompt, "model": model.path, "backend": getattr(model, "backend", "transformers"), "sample": k,
        "seed": options.seed, "seed_used": plan.seed, "n": options.n, "preset": options.preset,
        "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k,
        "max_tokens": options.max_tokens, "seconds": options.seconds, "constrained": options.constrained,
        **plan.choice.as_dict(), "bpm": round(bpm, 2), "bpm_source": bpm_source,
        "time_signature": f"{meter[0]}/{meter[1]}", "tokens": sample.tokens, "windows": len(sample.windows),
        "notes": len(piece), "new_notes": len(notes.pitch) if given is not None else None,
        "music_seconds": round(float(piece.duration), 2),
        "generation_seconds": round(elapsed, 3), "stop_reason": sample.reason, "decode": report.as_dict(),
        "length": plan.length,
        "steering": {**plan.steering.describe(), "active": plan.steering.active, "note": plan.steering_note},
    }
    return Generation(piece, tokens, report, settings)


def _on_given_clock(given, notes: DecodedNotes):
    """The given piece with the new notes added on its own tempo map (their times are in 10 ms ticks)."""
    from midilm.music.piece import Piece, Track

    tm = given.tempo_map
    start = np.round(tm.ticks_at(notes.start / TIME_RESOLUTION)).astype(np.int64)
    end = np.maximum(np.round(tm.ticks_at((notes.start + notes.duration) / TIME_RESOLUTION)).astype(np.int64),
                     start + 1)
    tracks = list(given.tracks)
    track_of = {}
    for i, t in enumerate(tracks):
        track_of.setdefault(t.program, i)
    new_track = []
    for p in notes.instrument.tolist():
        if p not in track_of:
            track_of[p] = len(tracks)
            tracks.append(Track(program_name(p), p))
        new_track.append(track_of[p])
    cat = lambda a, b: np.concatenate([np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)])  # noqa: E731
    return Piece(given.ticks_per_beat, cat(given.start_tick, start), cat(given.end_tick, end),
                 cat(given.pitch, notes.pitch), cat(given.velocity, np.full(len(start), DEFAULT_VELOCITY)),
                 cat(given.program, notes.instrument), cat(given.track, new_track), tracks=tracks,
                 tempo_map=tm, time_signatures=list(given.time_signatures),
                 key_signatures=list(given.key_signatures))


def output_paths(out: Path, n: int) -> list[Path]:
    """OUT.mid for one sample; OUT-1.mid, OUT-2.mid ... for several."""
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k + 1}{out.suffix or '.mid'}") for k in range(n)]


def write_generation(gen: Generation, midi_path: Path, wav: bool = False, png: bool = False) -> dict[str, str]:
    """Write the MIDI file, its tokens, its settings sidecar and optional audio and picture."""
    from midilm.music.midi_io import write_midi

    midi_path = Path(midi_path)
    written = {"midi": str(write_midi(gen.piece, midi_path))}
    tokens_path = midi_path.with_suffix(".tokens.json")
    tokens_path.write_text(json.dumps(gen.tokens) + "\n")
    written["tokens"] = str(tokens_path)
    if png:
        from midilm.music.pianoroll import pianoroll_png

        written["png"] = str(pianoroll_png(gen.piece, midi_path.with_suffix(".png"),
                                           title=gen.settings.get("prompt", "")[:90]))
    if wav:
        from midilm.music.audio import render_wav

        written["wav"] = str(render_wav(gen.piece, midi_path.with_suffix(".wav")))
    sidecar = midi_path.with_suffix(".json")
    sidecar.write_text(json.dumps({**gen.settings, "files": written}, indent=2) + "\n")
    written["settings"] = str(sidecar)
    return written



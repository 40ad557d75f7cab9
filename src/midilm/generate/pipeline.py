"""Text -> MIDI files: read what the prompt asks for, sample, decode on a tempo grid, write the outputs.

Instruments and tempo named in the prompt become constraints (an instrument allow-list) and the output
grid; explicit options override them. The output is lined up to a tempo: the option, else the prompt's,
else one estimated from the generated notes. Beside each MIDI file go the tokens and a JSON sidecar of
the settings, and on request a WAV (FluidSynth) and a piano-roll PNG.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from midilm.codecs.amt.decode import DecodeReport, decode_tokens
from midilm.generate.grammar import GrammarConfig
from midilm.generate.sampler import SamplingConfig, music_seconds
from midilm.music.gm import program_from_word, programs_in_text

# a representative bpm for each tempo word a prompt may use (the middle of its Italian bin)
TEMPO_WORD_BPM = {
    "grave": 35, "largo": 50, "lento": 50, "adagio": 65, "andante": 80, "moderato": 100, "allegretto": 110,
    "allegro": 125, "vivace": 150, "presto": 185, "prestissimo": 220, "slow": 70, "moderate": 100,
    "medium tempo": 100, "fast": 140, "very fast": 175, "upbeat": 125, "laid-back": 85,
}  # fmt: skip
_BPM = re.compile(r"(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute|beats a minute)", re.IGNORECASE)
_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, TEMPO_WORD_BPM), key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)
_METER = re.compile(r"\b(\d{1,2})/(2|4|8|16)\b")


@dataclass
class PromptControls:
    instruments: list[int] = field(default_factory=list)
    bpm: float | None = None
    time_signature: tuple[int, int] | None = None


def read_prompt(prompt: str) -> PromptControls:
    """Instruments, tempo and meter a prompt names ("a 90 bpm waltz in 3/4 for violin and piano")."""
    controls = PromptControls(instruments=programs_in_text(prompt))
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
    seconds: float | None = None
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


@dataclass
class Generation:
    piece: object  # Piece
    tokens: list[int]
    report: DecodeReport
    settings: dict


def resolve_settings(prompt: str, options: GenerateOptions) -> tuple[list[int] | None, float | None, tuple | None]:
    """The instrument allow-list, bpm and meter to use: explicit options first, then the prompt."""
    controls = read_prompt(prompt)
    if options.instruments:
        instruments = [program_from_word(w) for w in options.instruments]
    elif options.use_prompt_instruments and controls.instruments:
        instruments = controls.instruments
    else:
        instruments = None
    return instruments, options.bpm or controls.bpm, options.time_signature or controls.time_signature


def estimate_bpm(piece) -> float | None:
    """Tempo of generated notes (written at 120 bpm), estimated from the onsets."""
    try:
        from midilm.annotate.rhythm import estimate_tempo_from_notes
    except ImportError:
        return None
    bpm = estimate_tempo_from_notes(piece)
    return float(bpm) if 30 <= bpm <= 300 else None


def generate(model, prompt: str, options: GenerateOptions | None = None, context: list[int] = (),
             controls: list[int] = ()) -> list[Generation]:
    """Sample `options.n` pieces for a prompt with a loaded TextToMidiModel (on whichever backend it was loaded)."""
    options = options or GenerateOptions()
    if len(prompt) > 4000:
        raise ValueError(f"prompt is {len(prompt)} characters, over the 4000 limit")
    instruments, bpm, meter = resolve_settings(prompt, options)
    grammar = GrammarConfig.make(instruments, max_notes_per_onset=options.max_notes_per_onset)
    sampling = SamplingConfig(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
                              max_new_tokens=options.max_tokens, seconds=options.seconds, n=options.n,
                              seed=options.seed, constrained=options.constrained)
    prompt_ids = model.prompt_ids(prompt)
    if controls:
        from midilm.codecs.amt.vocab import ANTICIPATE

        prompt_ids = prompt_ids[:-1] + [model.layout.music_id(ANTICIPATE)]
    t0 = time.perf_counter()
    if not options.seconds or options.seconds > WINDOW_SECONDS:
        # without a length in seconds, windows follow one another until the token budget is spent
        from dataclasses import replace as _replace

        long_sampling = _replace(sampling, seconds=options.seconds or MAX_SECONDS)
        result = sample_long(model, prompt_ids, long_sampling, grammar, list(context), list(controls))
    else:
        result = model.sample(prompt_ids, sampling, grammar, context, controls)
    elapsed = time.perf_counter() - t0
    out = []
    for k, tokens in enumerate(result.tokens):
        full = list(context) + tokens
        chosen_bpm = bpm
        if chosen_bpm is None:
            rough, _ = decode_tokens(full)
            chosen_bpm = estimate_bpm(rough) or 120.0
        piece, report = decode_tokens(full, bpm=chosen_bpm, time_signature=meter or (4, 4))
        settings = {
            "prompt": prompt, "model": model.path, "backend": model.backend, "sample": k, "seed": options.seed,
            "n": options.n,
            "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k,
            "max_tokens": options.max_tokens, "seconds": options.seconds, "constrained": options.constrained,
            "instruments": instruments, "bpm": round(chosen_bpm, 2),
            "bpm_source": "option" if options.bpm else "prompt" if bpm else "estimated",
            "time_signature": f"{(meter or (4, 4))[0]}/{(meter or (4, 4))[1]}", "tokens": len(tokens),
            "notes": len(piece), "music_seconds": round(music_seconds(full), 2),
            "generation_seconds": round(elapsed, 3), "stop_reason": result.stop_reasons[k],
            "decode": report.as_dict(),
        }
        out.append(Generation(piece, tokens, report, settings))
    return out


WINDOW_SECONDS = 95.0  # one AMT sequence spans 100 s
MAX_SECONDS = 1800.0  # a piece without a requested length stops at its token budget or here
KEEP_SECONDS = 45.0  # context carried into the next window


def _shift(events: list[int], dt: int) -> list[int]:
    """Add `dt` ticks to the time of each triplet (events or controls)."""
    out = list(events)
    out[0::3] = [t + dt for t in out[0::3]]
    return out


def sample_long(model, prompt_ids, sampling: SamplingConfig, grammar: GrammarConfig, context: list[int],
                controls: list[int]):
    """Generate past 100 s with a sliding window, as AMT does: each window starts with the last
    KEEP_SECONDS of music re-zeroed as context, and its new events are shifted back into place."""
    from dataclasses import replace

    from midilm.codecs.amt.vocab import ATIME_OFFSET, CONTROL_OFFSET, DRUMS, MAX_TIME, NOTE_OFFSET
    from midilm.generate.sampler import SampleResult

    total = int(sampling.seconds * 100)
    results, reasons, steps = [], [], 0
    for k in range(sampling.n):
        produced: list[int] = list(context)  # absolute times
        new_count, offset, reason = 0, 0, ""
        seed = None if sampling.seed is None else sampling.seed + k
        window_grammar = grammar
        while True:
            # events only: controls are re-interleaved for each window from `controls`
            trip = [produced[i : i + 3] for i in range(0, len(produced), 3) if produced[i + 2] < CONTROL_OFFSET]
            window = [x for t in trip if t[0] >= offset for x in _shift(t, -offset)]
            win_controls = [x for i in range(0, len(controls), 3)
                            if offset <= controls[i] - ATIME_OFFSET < offset + MAX_TIME
                            for x in _shift(controls[i : i + 3], -offset)]
            left = total - offset
            cfg = replace(sampling, n=1, seed=seed, seconds=min(left, MAX_TIME - 1) / 100.0,
                          max_new_tokens=max(sampling.max_new_tokens - new_count, 3))
            r = model.sample(prompt_ids, cfg, window_grammar, window, win_controls)
            steps += r.steps
            new = r.tokens[0]
            produced += _shift(new, offset)
            new_count += len(new)
            reason = r.stop_reasons[0]
            last = max((t[0] for t in trip), default=0)
            last = max([last] + [t + offset for t, n in zip(new[0::3], new[2::3]) if n < CONTROL_OFFSET])
            if not new or reason == "max tokens" or left < MAX_TIME or last + 100 >= total:
                break
            offset = max(last - int(KEEP_SECONDS * 100), offset + 100)
            # the next window sees only recent music: keep it to the instruments already used once full
            used = {(t[2] - NOTE_OFFSET) // 128 for t in trip}
            used |= {(n - NOTE_OFFSET) // 128 for n in new[2::3] if n < CONTROL_OFFSET}
            if len(used - {DRUMS}) >= grammar.max_melodic:
                allowed = used | {DRUMS} if grammar.instruments is None else used | (grammar.instruments & {DRUMS})
                window_grammar = replace(grammar, instruments=frozenset(allowed))
            seed = None if seed is None else seed + 1000
        results.append(produced[len(context):])
        reasons.append(reason)
    return SampleResult(results, steps, reasons)


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



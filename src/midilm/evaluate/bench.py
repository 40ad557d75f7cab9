"""`midilm bench`: speed of the codec, the analysis, training and generation, each next to its baseline
measured in the same run, as one table (printed, and written as bench.json and bench.md).

- codec: AMT encoding of POP909 songs by our encoder and by the mido-based reference path, both as whole
  processes, and decoding 2,046 ids to MIDI bytes (`benchmarks/bench_codec.py`);
- analysis: full analysis (piece + three clips) against music21 parsing + key analysis only
  (`benchmarks/bench_analysis.py`);
- training: tokens per second of the text-to-MIDI training step (forward, backward, AdamW; bf16 autocast)
  on real AMT lines, with our per-slot block loss against the usual full-vocabulary cross-entropy, on the
  shipped model's architecture with fresh weights;
- generation: the shipped model, our constrained loop (on transformers, and on llama.cpp with a q8_0 GGUF
  where llama-cpp-python is installed) against plain `transformers` `generate` (top-p sampling, same
  prompt), with tokens per second by wall and by CPU time (the steadier figure on a shared machine),
  seconds for 2,046 tokens (MIDI-LLM's sample length) and the real-time factor (seconds of music per
  second of compute).

The codec and analysis baselines live in the repository's `benchmarks/` folder (a source checkout); where
it is absent those rows are skipped with a note. Sizes: `--quick` (seconds, for tests), the default
(about a minute or two on 2 CPU cores) and `--full` (the figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SIZES = {
    "quick": {"songs": 6, "repeat": 1, "analysis_songs": 4, "music21_songs": 1, "train_steps": 1, "batch": 1,
              "seq": 128, "gen_tokens": 48, "decode_runs": 20},
    "default": {"songs": 60, "repeat": 1, "analysis_songs": 30, "music21_songs": 2, "train_steps": 3, "batch": 2,
                "seq": 512, "gen_tokens": 512, "decode_runs": 100},
    "full": {"songs": 909, "repeat": 3, "analysis_songs": 200, "music21_songs": 10, "train_steps": 10, "batch": 8,
             "seq": 512, "gen_tokens": 2046, "decode_runs": 200},
}


@dataclass
class Row:
    section: str
    benchmark: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    values: dict = field(default_factory=dict)


def _benchmarks():
    """The repository's benchmarks package (baselines), or None outside a source checkout."""
    if not (REPO / "benchmarks" / "bench_codec.py").is_file():
        return None
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import benchmarks.bench_analysis as analysis
    import benchmarks.bench_codec as codec

    return codec, analysis


def pop909_songs(data: Path) -> list[str]:
    return sorted(str(p) for p in Path(data, "pop909", "POP909").glob("[0-9][0-9][0-9]/[0-9][0-9][0-9].mid"))


def bench_codec(songs: list[str], size: dict, notes: list[str]) -> list[Row]:
    mods = _benchmarks()
    if mods is None:
        notes.append("codec: benchmarks/ (the mido baseline) is not here; run from a source checkout")
        return []
    codec = mods[0]
    enc = codec.bench_encode(songs[: size["songs"]], size["repeat"])
    dec = codec.bench_decode(songs[0], size["decode_runs"])
    return [
        Row("codec", f"AMT encode {enc['files']} POP909 songs, whole process", f"{enc['ours_s']:.2f} s",
            f"{enc['baseline_s']:.2f} s (mido)", f"{enc['ratio']:.1f}x", enc),
        Row("codec", f"decode {dec['ids']} ids to MIDI bytes", f"{dec['midi_bytes_ms']:.2f} ms",
            f"{dec['baseline_ms']:.2f} ms (mido objects)", f"{dec['baseline_ms'] / dec['midi_bytes_ms']:.1f}x", dec),
    ]


def bench_analysis(songs: list[str], size: dict, notes: list[str]) -> list[Row]:
    mods = _benchmarks()
    if mods is None:
        notes.append("analysis: benchmarks/ (the music21 baseline) is not here; run from a source checkout")
        return []
    analysis = mods[1]
    paths = songs[: size["analysis_songs"]]
    analysis.analyse_file(paths[0])  # imports and caches outside the clock
    ours = analysis.run(paths, 1)
    try:
        analysis.music21_key(paths[0])
        base = analysis.run_music21(paths[: size["music21_songs"]])
    except ImportError:
        notes.append("analysis: music21 is not installed, no baseline")
        return [Row("analysis", f"POP909 songs/s, {len(paths)} songs, 1 process", f"{ours:.1f} songs/s (full)")]
    return [Row("analysis", f"POP909 songs/s, full analysis vs music21 parse + key ({size['music21_songs']} songs)",
                f"{ours:.1f} songs/s", f"{base:.2f} songs/s", f"{ours / base:.0f}x",
                {"ours_songs_per_s": ours, "baseline_songs_per_s": base, "songs": len(paths)})]


def _training_batches(songs: list[str], layout, batch: int, seq: int, count: int):
    """`count` batches of real AMT ids (music block of the merged vocabulary), consecutive windows of songs."""
    import torch

    from midilm.codecs.amt.encode import encode_midi

    ids: list[int] = []
    for song in songs:
        ids += [layout.music_offset + t for t in encode_midi(song)]
        if len(ids) >= batch * seq * count:
            break
    need = batch * seq
    if len(ids) < need:
        raise ValueError("not enough music to fill one training batch")
    out = []
    for k in range(count):
        chunk = ids[(k * need) % max(len(ids) - need, 1):][:need]
        x = torch.tensor(chunk).view(batch, seq)
        out.append(x)
    return out


def bench_training(songs: list[str], size: dict, model_dir: Path, notes: list[str]) -> list[Row]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midilm.models.vocab import layout_for
    from midilm.train.t2m import block_loss, loss_blocks

    config = LlamaConfig.from_pretrained(model_dir)
    layout = layout_for(model_dir, config.vocab_size)
    blocks = loss_blocks(layout)
    steps, batch, seq = size["train_steps"], size["batch"], size["seq"]
    data = _training_batches(songs, layout, batch, seq, steps + 1)
    results = {}
    for name in ("block", "full"):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(x: torch.Tensor, kind: str = name, m=model, o=opt) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if kind == "block":
                    hidden = m.get_decoder()(input_ids=x).last_hidden_state
                    loss = block_loss(hidden, m.get_output_embeddings().weight, x, blocks)
                else:
                    loss = m(input_ids=x, labels=x).loss
            loss.backward()
            o.step()
            o.zero_grad(set_to_none=True)

        step(data[0])  # warm-up outside the clock
        _, wall, cpu = _timed(lambda: [step(x) for x in data[1:]])
        results[name] = steps * batch * seq / wall
        results[f"{name}_cpu"] = steps * batch * seq / cpu
    params = sum(p.numel() for p in model.parameters()) / 1e6
    what = f"{params:.1f}M params, vocab {config.vocab_size:,}, batch {batch}x{seq}, bf16"
    return [Row("training", f"t2m step tokens/s ({what}): block loss vs full-vocabulary loss",
                f"{results['block']:.0f} tok/s (CPU {results['block_cpu']:.0f})",
                f"{results['full']:.0f} tok/s (CPU {results['full_cpu']:.0f})",
                f"{results['block'] / results['full']:.1f}x",
                {"block_tokens_per_s": results["block"], "full_tokens_per_s": results["full"],
                 "block_tokens_per_cpu_s": results["block_cpu"], "full_tokens_per_cpu_s": results["full_cpu"],
                 "steps": steps, "batch": batch, "seq": seq, "params_millions": params})]


def _timed(fn):
    """(result, wall seconds, CPU seconds of this process): CPU time is the steadier figure on a shared machine."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _llamacpp_decoder(model_dir: Path, work: Path, threads: int, notes: list[str]):
    """Our loop's llama.cpp decoder over the q8_0 events-head GGUF of the model (what `midilm generate
    --backend llamacpp` runs), or None (with a note) where unavailable."""
    try:
        import llama_cpp  # noqa: F401

        from midilm.generate.backends.llamacpp import load_llamacpp
    except ImportError:
        notes.append("generation: llama.cpp not timed (llama-cpp-python is not installed)")
        return None
    return load_llamacpp(model_dir, gguf_type="q8_0", threads=threads, cache_dir=work)


def bench_generation(model_dir: Path, size: dict, notes: list[str], threads: int = 1) -> list[Row]:
    import tempfile

    import torch

    from midilm.generate.grammar import GrammarConfig
    from midilm.generate.sampler import SamplingConfig, music_seconds, sample_music
    from midilm.models.midi_llm import load_text_to_midi

    tokens = size["gen_tokens"]
    m = load_text_to_midi(model_dir)
    prompt = m.prompt_ids("A cheerful pop song with piano, bass and drums in C major at 120 bpm.")
    offset = m.layout.music_offset
    # a grammar that never runs out of room, so every run makes exactly the requested tokens
    grammar = GrammarConfig(max_notes_per_onset=10_000)

    def ours(decoder) -> tuple:
        sample_music(decoder, prompt, offset, SamplingConfig(max_new_tokens=16, seed=0), grammar)  # warm-up
        return _timed(lambda: sample_music(decoder, prompt, offset, SamplingConfig(max_new_tokens=tokens, seed=0),
                                           grammar))

    runs = {"transformers": ours(m.model)}
    with tempfile.TemporaryDirectory(prefix="midilm-bench-") as tmp:
        decoder = _llamacpp_decoder(model_dir, Path(tmp), threads, notes)
        if decoder is not None:
            runs["llama.cpp q8_0"] = ours(decoder)
            del decoder
    with torch.no_grad():
        ids = torch.tensor([prompt])
        out, base_s, base_cpu = _timed(lambda: m.model.generate(
            ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, top_p=0.98, temperature=1.0,
            pad_token_id=0))
    n_base = out.shape[1] - ids.shape[1]
    base_tps = n_base / base_s
    rows, values = [], {"baseline_tokens": n_base, "baseline_seconds": base_s, "baseline_cpu_seconds": base_cpu,
                        "baseline_tokens_per_s": base_tps}
    for name, (r, wall, cpu) in runs.items():
        n = len(r.tokens[0])
        tps = n / wall
        rows.append(Row("generation", f"tokens/s, {tokens} new tokens, shipped model: constrained loop on {name} vs "
                        "transformers generate", f"{tps:.0f} tok/s (CPU {n / cpu:.0f})",
                        f"{base_tps:.0f} tok/s (CPU {n_base / base_cpu:.0f})", f"{tps / base_tps:.1f}x"))
        key = "ours" if name == "transformers" else name.split()[0].replace(".", "")
        values.update({f"{key}_tokens": n, f"{key}_seconds": wall, f"{key}_cpu_seconds": cpu,
                       f"{key}_tokens_per_s": tps, f"{key}_real_time_factor": music_seconds(r.tokens[0]) / wall})
    best = max(runs, key=lambda k: len(runs[k][0].tokens[0]) / runs[k][1])
    best_tps = values[("ours" if best == "transformers" else best.split()[0].replace(".", "")) + "_tokens_per_s"]
    est = "" if tokens == 2046 else " (estimated from the rate)"
    rows.append(Row("generation", f"seconds for 2,046 tokens{est}, {best}", f"{2046 / best_tps:.1f} s",
                    f"{2046 / base_tps:.1f} s", f"{best_tps / base_tps:.1f}x"))
    rtf = music_seconds(runs[best][0].tokens[0]) / runs[best][1]
    values["real_time_factor"] = rtf
    rows.append(Row("generation", f"real-time factor (music seconds per compute second), {best}", f"{rtf:.1f}",
                    "- (unconstrained ids are not always music)", "-", values))
    return rows


def run_bench(size_name: str = "default", data: str | Path | None = None, model_dir: str | Path | None = None,
              threads: int = 1, sections: tuple[str, ...] = ("codec", "analysis", "training", "generation"),
              progress: bool = True) -> dict:
    """Run the benchmarks; returns {"rows": [...], "notes": [...], "size": ..., "seconds": ...}."""
    import torch

    from midilm.generate.cli import default_model_path

    size = SIZES[size_name]
    data = Path(data or os.environ.get("MIDILM_SHARED_DATA") or REPO.parent / "shared" / "data")
    model_dir = Path(model_dir) if model_dir else default_model_path()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    songs = pop909_songs(data)
    if not songs:
        raise FileNotFoundError(f"no POP909 songs under {data}/pop909/POP909 (pass --data, the shared data folder)")
    torch.set_num_threads(threads)
    rows: list[Row] = []
    notes: list[str] = []
    seconds = {}
    for name in sections:
        if progress:
            print(f"midilm bench: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        if name == "codec":
            rows += bench_codec(songs, size, notes)
        elif name == "analysis":
            rows += bench_analysis(songs, size, notes)
        elif name == "training":
            rows += bench_training(songs, size, model_dir, notes)
        elif name == "generation":
            rows += bench_generation(model_dir, size, notes, threads)
        seconds[name] = round(time.perf_counter() - t, 2)
    return {"size": size_name, "threads": threads, "model": str(model_dir), "rows": [vars(r) for r in rows],
            "notes": notes, "seconds": seconds, "total_seconds": round(statistics.fsum(seconds.values()), 2),
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, Python {sys.version.split()[0]}"}


def markdown_table(result: dict) -> str:
    lines = ["| section | benchmark | ours | baseline | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['benchmark']} | {r['ours']} | {r['baseline']} | {r['ratio']} |"
              for r in result["rows"]]
    return "\n".join(lines)


def write_results(result: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [f"# midilm bench ({result['size']})", "", f"{result['machine']}, {result['threads']} thread(s), model "
          f"`{result['model']}`, {result['total_seconds']:.0f} s in all.", "", markdown_table(result), ""]
    md += [f"- {n}" for n in result["notes"]]
    (out / "bench.md").write_text("\n".join(md) + "\n")
    return out / "bench.md"


def cmd_bench(args) -> int:
    size = "quick" if args.quick else "full" if args.full else "default"
    sections = tuple(s.strip() for s in args.only.split(",")) if args.only else ("codec", "analysis", "training",
                                                                                 "generation")
    unknown = set(sections) - {"codec", "analysis", "training", "generation"}
    if unknown:
        raise ValueError(f"unknown section(s) for --only: {', '.join(sorted(unknown))}")
    result = run_bench(size, args.data, args.model, args.threads, sections)
    path = write_results(result, args.out)
    print(markdown_table(result))
    for n in result["notes"]:
        print(f"note: {n}")
    print(f"wrote {path} and bench.json ({result['total_seconds']:.0f} s)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed of codec, analysis, training and generation next to baselines")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    size.add_argument("--full", action="store_true", help="the sizes of benchmarks/RESULTS.md (many minutes)")
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help="comma-separated subset of codec,analysis,training,generation")
    p.add_argument("--data", default=None, help="the shared data folder holding pop909/ (default ../shared/data)")
    p.add_argument("--model", default=None, help="text-to-MIDI model directory (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench-results", metavar="DIR", help="where bench.json and bench.md go")
    p.set_defaults(func=cmd_bench)

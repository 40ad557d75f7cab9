"""Cost of guided decoding per generated token, as a ratio against the same model decoding without it.

    python benchmarks/bench_key_guide.py [--model DIR] [--pieces 8] [--repeat 3] [--threads 1]

The shipped understanding model describes the same pieces (MIDI files from `../shared/data/fixtures`, or
the bundled example when that folder is missing) in each arm of every round: with every guide off ("plain"),
with only its key guide at its saved strength ("key"), and as saved (key, genre and instrument guides, those it
has: "all"). The encoder features are computed once beforehand, so the arms time only the LLM's decoding loop,
where the guides' logits processors run at every step. Reported: the
best process CPU seconds per generated token over the rounds (the machine is shared: CPU time is the
steadier figure) and the ratio guided / plain. The captions differ between the arms (that is the guide's
point), so the figures are per token, not per caption.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def fixture_pieces(n: int) -> list:
    from midilm.music.examples import example_piece
    from midilm.music.midi_io import read_midi

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fixtures" / "MIDIs_multitrack"
    pieces = []
    for path in sorted(root.glob("*.mid"))[:n] if root.is_dir() else []:
        try:
            pieces.append(read_midi(path))
        except Exception:  # a fixture this reader refuses is not what is being timed
            continue
    return pieces or [example_piece()]


def main() -> None:
    import torch

    from midilm.models.conversation import DESCRIBE_INSTRUCTION, encode_conversation
    from midilm.understand.model import (
        DESCRIBE_TOKENS,
        default_understand_model_path,
        load_understanding_model,
        piece_notes,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(default_understand_model_path()))
    p.add_argument("--pieces", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model = load_understanding_model(args.model).model
    cfg = model.config
    saved = (cfg.key_guide, cfg.genre_guide, cfg.instrument_guide)
    if model.key_pathway is None or cfg.key_guide <= 0:
        raise SystemExit(f"{args.model} has no key guide to time")
    pieces = fixture_pieces(args.pieces)
    feats = model.features([piece_notes(piece) for piece in pieces])
    encoded = [encode_conversation(model.tokenizer, [(DESCRIBE_INSTRUCTION, None)]) for _ in pieces]

    def run(setting: tuple[float, float, bool]) -> tuple[float, int]:
        cfg.key_guide, cfg.genre_guide, cfg.instrument_guide = setting
        c = time.process_time()
        texts = model.generate(feats, encoded, max_new_tokens=DESCRIBE_TOKENS)
        cpu = time.process_time() - c
        return cpu, sum(len(model.tokenizer(t)["input_ids"]) + 1 for t in texts)  # + EOS

    arms = {"plain": (0.0, 0.0, False), "key": (saved[0], 0.0, False), "all": saved}
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, setting in arms.items():
            cpu, tokens = run(setting)
            best[name] = min(best.get(name, float("inf")), cpu / tokens)
    cfg.key_guide, cfg.genre_guide, cfg.instrument_guide = saved
    print(f"{len(pieces)} pieces, describe, best of {args.repeat}, {args.threads} thread(s)")
    print("| decoding | CPU ms per token | ratio |")
    print("|---|---|---|")
    for name in arms:
        print(f"| {name} | {best[name] * 1000:.2f} | {best[name] / best['plain']:.2f}x |")


if __name__ == "__main__":
    main()

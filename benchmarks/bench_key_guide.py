"""Cost of key-guided decoding per generated token, as a ratio against the same model decoding without it.

    python benchmarks/bench_key_guide.py [--model DIR] [--pieces 8] [--repeat 3] [--threads 1]

The shipped understanding model describes the same pieces (MIDI files from `../shared/data/fixtures`, or
the bundled example when that folder is missing) twice per round: with its saved `key_guide` strength and
with the guide switched off (strength 0). The encoder features are computed once beforehand, so both arms
time only the LLM's decoding loop, where the guide's logits processor runs at every step. Reported: the
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
    strength = model.config.key_guide
    if model.key_pathway is None or strength <= 0:
        raise SystemExit(f"{args.model} has no key guide to time")
    pieces = fixture_pieces(args.pieces)
    feats = model.features([piece_notes(piece) for piece in pieces])
    encoded = [encode_conversation(model.tokenizer, [(DESCRIBE_INSTRUCTION, None)]) for _ in pieces]

    def run(guide: float) -> tuple[float, int]:
        model.config.key_guide = guide
        c = time.process_time()
        texts = model.generate(feats, encoded, max_new_tokens=DESCRIBE_TOKENS)
        cpu = time.process_time() - c
        return cpu, sum(len(model.tokenizer(t)["input_ids"]) + 1 for t in texts)  # + EOS

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, guide in (("plain", 0.0), ("guided", strength)):
            cpu, tokens = run(guide)
            best[name] = min(best.get(name, float("inf")), cpu / tokens)
    model.config.key_guide = strength
    print(f"{len(pieces)} pieces, describe, best of {args.repeat}, {args.threads} thread(s)")
    print("| decoding | CPU ms per token | ratio |")
    print("|---|---|---|")
    for name in ("plain", "guided"):
        print(f"| {name} | {best[name] * 1000:.2f} | {best[name] / best['plain']:.2f}x |")


if __name__ == "__main__":
    main()

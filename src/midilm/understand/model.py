"""The public understanding API: load a model directory by its kind and ask it about pieces.

`load_understanding_model(path)` reads `midilm.json` in the directory and builds the model its "kind"
names through a small registry (`register_kind`); "midi-llama" (MusicBERT prefix embeddings) is built
in, and a text-input baseline (ABC notation) or a native-token variant registers its own loader and
subclass of `UnderstandingModel`, which only has to implement `_generate`.

What the model sees of a piece: the notes of the whole piece, OctupleMIDI-encoded and pooled over up
to `max_windows` (default 4) encoder windows of 1,000 notes spread evenly over it, exactly as the piece
rows of the training data (the 20 s clip rows are short enough for one window). A long piece is therefore
described as a whole, not by its first 20 seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from midilm.models.conversation import DESCRIBE_INSTRUCTION

DESCRIBE_TOKENS = 160
ANSWER_TOKENS = 128


def default_understand_model_path() -> Path:
    """The understanding model shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "data" / "models" / "midilm-understand-tiny"


@dataclass
class GenerationOptions:
    max_new_tokens: int = ANSWER_TOKENS
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


class UnderstandingModel:
    """Answers questions about pieces. Subclasses implement `_generate` for one MIDI representation."""

    kind: str = ""

    def __init__(self, path: str | Path, batch_size: int = 16):
        self.path = str(path)
        self.batch_size = batch_size

    # the one method a representation implements
    def _generate(self, pieces: Sequence, conversations: Sequence[list[tuple[str, str | None]]],
                  options: GenerationOptions) -> list[str]:
        raise NotImplementedError

    def describe(self, piece, *, max_new_tokens: int = DESCRIBE_TOKENS, temperature: float = 0.0, seed: int = 0,
                 top_p: float = 1.0) -> str:
        """A caption of the piece."""
        return self.describe_many([piece], max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                  top_p=top_p)[0]

    def ask(self, piece, question: str, *, history: list[tuple[str, str]] | None = None,
            max_new_tokens: int = ANSWER_TOKENS, temperature: float = 0.0, seed: int = 0, top_p: float = 1.0) -> str:
        """The answer to `question`, after the earlier (question, answer) turns in `history`."""
        question = _check_question(question)
        turns = [(q, a) for q, a in (history or [])] + [(question, None)]
        opts = GenerationOptions(max_new_tokens, temperature, top_p, seed)
        return self._generate([piece], [turns], opts)[0]

    def describe_many(self, pieces: Sequence, *, max_new_tokens: int = DESCRIBE_TOKENS, temperature: float = 0.0,
                      seed: int = 0, top_p: float = 1.0) -> list[str]:
        """Captions of many pieces, in batches (the same as `describe` on each, faster)."""
        return self.ask_many(pieces, [DESCRIBE_INSTRUCTION] * len(pieces), max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed, top_p=top_p)

    def ask_many(self, pieces: Sequence, questions: Sequence[str], *, max_new_tokens: int = ANSWER_TOKENS,
                 temperature: float = 0.0, seed: int = 0, top_p: float = 1.0) -> list[str]:
        """One answer per (piece, question) pair, in batches."""
        if len(pieces) != len(questions):
            raise ValueError(f"{len(pieces)} pieces but {len(questions)} questions")
        opts = GenerationOptions(max_new_tokens, temperature, top_p, seed)
        out: list[str] = []
        for s in range(0, len(pieces), self.batch_size):
            convs = [[(_check_question(q), None)] for q in questions[s : s + self.batch_size]]
            out += self._generate(pieces[s : s + self.batch_size], convs, opts)
        return out


def _check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    return question.strip()


class MidiLlamaUnderstanding(UnderstandingModel):
    """MIDI-LLaMA: the music enters as projected MusicBERT vectors before the instruction."""

    kind = "midi-llama"

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = None, batch_size: int = 16):
        from midilm.models.midi_llama import MidiLlama

        super().__init__(path, batch_size)
        self.model = MidiLlama.from_pretrained(path, device=device, dtype=dtype)

    def _generate(self, pieces, conversations, options: GenerationOptions) -> list[str]:
        from midilm.models.conversation import encode_conversation

        # the same piece object asked several questions in one batch is encoded once
        first = {id(p): i for i, p in reversed(list(enumerate(pieces)))}
        uniq = list(dict.fromkeys(first.values()))
        feats = self.model.features([piece_notes(pieces[i]) for i in uniq])
        feats = feats[[uniq.index(first[id(p)]) for p in pieces]]
        encoded = [encode_conversation(self.model.tokenizer, turns) for turns in conversations]
        return self.model.generate(feats, encoded, max_new_tokens=options.max_new_tokens,
                                   temperature=options.temperature, top_p=options.top_p, seed=options.seed,
                                   questions=[turns[-1][0] for turns in conversations])


def piece_notes(piece):
    """OctupleMIDI notes of a Piece (or of an [n, 8] array already encoded); an empty piece is an error."""
    import numpy as np

    from midilm.codecs.octuple import encode_piece
    from midilm.music.piece import Piece

    notes = encode_piece(piece) if isinstance(piece, Piece) else np.asarray(piece)
    if not len(notes):
        raise ValueError(f"{getattr(piece, 'path', None) or 'the piece'} has no notes to understand")
    return notes


_KINDS: dict[str, Callable[..., UnderstandingModel]] = {"midi-llama": MidiLlamaUnderstanding}


def register_kind(kind: str, loader: Callable[..., UnderstandingModel]) -> None:
    """Make `load_understanding_model` build `loader(path, device=..., dtype=...)` for directories of this kind."""
    _KINDS[kind] = loader


def model_kind(path: str | Path) -> str:
    from midilm.models.manifest import read_manifest

    return read_manifest(path)["kind"]


def load_understanding_model(path: str | Path | None = None, device: str = "cpu",
                             dtype: str | None = None) -> UnderstandingModel:
    """Load a model directory (None: the shipped default) onto `device` in `dtype` (fp32, bf16, fp16; None:
    bf16 on a GPU that has it, else fp32); local files only, safetensors only."""
    root = Path(path) if path is not None else default_understand_model_path()
    if not root.is_dir():
        hint = "" if path is not None else " (no default understanding model in this install: pass a path)"
        raise FileNotFoundError(f"model directory not found: {root}{hint}")
    kind = model_kind(root)
    if kind not in _KINDS:
        import midilm.understand.token_input  # noqa: F401  (registers the ABC and native-token kinds)
    if kind not in _KINDS:
        raise ValueError(f"{root}: unknown model kind {kind!r} (known: {', '.join(sorted(_KINDS))})")
    return _KINDS[kind](root, device=device, dtype=dtype)

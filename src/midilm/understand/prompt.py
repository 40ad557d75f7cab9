"""The conversation template of the understanding models, as token ids around one MIDI slot.

MIDI-LLaMA places the music before the instruction's text, LLaVA style: a system line, then the user's
turn opening with the MIDI (prefix embeddings, or text for a text-based MIDI input) followed by the
question, then the assistant's answer closed by EOS. Later turns repeat USER/ASSISTANT without the music:

    <BOS>A chat between a user and a music expert who reads the MIDI music the user gives.
    USER: [MIDI]
    What key is this piece in?
    ASSISTANT: It is in G major.<EOS>
    USER: And the tempo?
    ASSISTANT: ...

Each part is tokenised on its own and the ids are concatenated, so training and inference see the same
ids whatever the byte-level BPE would merge across part boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SYSTEM = "A chat between a user and a music expert who reads the MIDI music the user gives."
USER = "\nUSER: "
ASSISTANT = "\nASSISTANT: "
IGNORE = -100

# What `describe` asks: the first of the dataset's caption instructions, so describe matches training.
DESCRIBE_INSTRUCTION = "Describe this piece of music."


@dataclass
class Encoded:
    """Ids before the MIDI slot, ids after it, and the labels of the ids after it (IGNORE = no loss)."""

    before: list[int]
    after: list[int]
    labels: list[int]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_conversation(tokenizer, turns: Sequence[tuple[str, str | None]], midi_text: str = "") -> Encoded:
    """Ids of a conversation whose turns are (question, answer); the last answer may be None (to generate).

    Loss falls on the answers and their EOS only. `midi_text` fills the MIDI slot for inputs that are
    text (ABC notation); an embedding input leaves it empty and puts its vectors between the two parts.
    """
    if not turns:
        raise ValueError("a conversation needs at least one question")
    before = [tokenizer.bos_token_id] + _ids(tokenizer, SYSTEM + USER)
    after: list[int] = []
    labels: list[int] = []
    for i, (question, answer) in enumerate(turns):
        head = ("" if i == 0 else USER) + ("\n" if i == 0 else "") + question.strip() + ASSISTANT
        if i == 0 and midi_text:
            head = midi_text + head
        q = _ids(tokenizer, head)
        after += q
        labels += [IGNORE] * len(q)
        if answer is None:
            if i != len(turns) - 1:
                raise ValueError("only the last turn may lack an answer")
            break
        a = _ids(tokenizer, answer.strip()) + [tokenizer.eos_token_id]
        after += a
        labels += a
    return Encoded(before, after, labels)


def text_only(tokenizer, turns: Sequence[tuple[str, str]]) -> list[int]:
    """The whole conversation without music (what the LLM's text pretraining reads)."""
    enc = encode_conversation(tokenizer, turns)
    return enc.before + enc.after

"""The conversation template of the understanding models, as token ids around one MIDI slot.

MIDI-LLaMA places the music before the instruction's text, LLaVA style: a system line, then the user's
turn opening with the MIDI (prefix embeddings, or text for a text-based MIDI input) followed by the
question, then the assistant's answer closed by EOS. Later turns repeat the user/assistant turns without
the music.

An instruct LLM whose tokenizer has a chat template is spoken to in that template (system, user and
assistant messages rendered by `apply_chat_template`, the MIDI slot at the start of the first user
message); any other tokenizer gets midilm's own plain template:

    <BOS>A chat between a user and a music expert who reads the MIDI music the user gives.
    USER: [MIDI]
    What key is this piece in?
    ASSISTANT: It is in G major.<EOS>
    USER: And the tempo?
    ASSISTANT: ...

Each part is tokenised on its own and the ids are concatenated, so training and inference see the same
ids whatever the tokenizer would merge across part boundaries. Loss falls on the answers (with their
end-of-turn ids) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SYSTEM = "A chat between a user and a music expert who reads the MIDI music the user gives."
USER = "\nUSER: "
ASSISTANT = "\nASSISTANT: "
IGNORE = -100
MIDI_SLOT = "\u27e6MIDI\u27e7"  # a placeholder cut out of the rendered chat template, never tokenised

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


def uses_chat_template(tokenizer) -> bool:
    """Whether conversations are written in the tokenizer's own chat template (an instruct model's)."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_conversation(tokenizer, turns: Sequence[tuple[str, str | None]], midi_text: str = "") -> Encoded:
    """Ids of a conversation whose turns are (question, answer); the last answer may be None (to generate).

    `midi_text` fills the MIDI slot for inputs that are text (ABC notation); an embedding input leaves it
    empty and puts its vectors between the two parts.
    """
    if not turns:
        raise ValueError("a conversation needs at least one question")
    if any(a is None for _, a in turns[:-1]):
        raise ValueError("only the last turn may lack an answer")
    if uses_chat_template(tokenizer):
        return _encode_chat(tokenizer, turns, midi_text)
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
            break
        a = _ids(tokenizer, answer.strip()) + [tokenizer.eos_token_id]
        after += a
        labels += a
    return Encoded(before, after, labels)


def _encode_chat(tokenizer, turns: Sequence[tuple[str, str | None]], midi_text: str) -> Encoded:
    """The conversation in the tokenizer's chat template: each new user turn (with the generation prompt)
    and each answer are the template's own text, cut where the rendering grows."""

    def render(messages: list[dict], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    messages = [{"role": "system", "content": SYSTEM}]
    done = ""
    before: list[int] = []
    after: list[int] = []
    labels: list[int] = []
    for i, (question, answer) in enumerate(turns):
        messages.append({"role": "user", "content": (MIDI_SLOT + "\n" if i == 0 else "") + question.strip()})
        prompt = render(messages, True)
        if not prompt.startswith(done):
            raise ValueError("the tokenizer's chat template rewrites earlier turns; midilm cannot train on it")
        part = prompt[len(done) :]
        if i == 0:
            head, found, part = part.partition(MIDI_SLOT)
            if not found:
                raise ValueError("the tokenizer's chat template drops the user's message")
            before = _ids(tokenizer, head)
            part = midi_text + part
        q = _ids(tokenizer, part)
        after += q
        labels += [IGNORE] * len(q)
        if answer is None:
            break
        messages.append({"role": "assistant", "content": answer.strip()})
        full = render(messages, False)
        if not full.startswith(prompt):
            raise ValueError("the tokenizer's chat template does not continue its generation prompt")
        a = _ids(tokenizer, full[len(prompt) :])
        after += a
        labels += a
        done = full
    return Encoded(before, after, labels)


def text_only(tokenizer, turns: Sequence[tuple[str, str]]) -> list[int]:
    """The whole conversation without music (what the LLM's text pretraining reads)."""
    enc = encode_conversation(tokenizer, turns)
    return enc.before + enc.after

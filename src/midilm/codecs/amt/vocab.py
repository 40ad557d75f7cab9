"""The AMT arrival-time vocabulary (the `anticipation` reference, commit af37397) and merged-LLM ids."""

from __future__ import annotations

TIME_RESOLUTION = 100  # ticks per second (10 ms)
MAX_TIME = 100 * TIME_RESOLUTION  # onset ticks inside one sequence
MAX_DUR = 10 * TIME_RESOLUTION
MAX_PITCH = 128
MAX_INSTR = 129  # 128 GM programs + drums
DRUMS = 128
MAX_NOTE = MAX_PITCH * MAX_INSTR

TIME_OFFSET = 0
DUR_OFFSET = TIME_OFFSET + MAX_TIME  # 10000
NOTE_OFFSET = DUR_OFFSET + MAX_DUR  # 11000
REST = NOTE_OFFSET + MAX_NOTE  # 27512

CONTROL_OFFSET = REST + 1  # 27513
ATIME_OFFSET = CONTROL_OFFSET
ADUR_OFFSET = ATIME_OFFSET + MAX_TIME  # 37513
ANOTE_OFFSET = ADUR_OFFSET + MAX_DUR  # 38513

SPECIAL_OFFSET = ANOTE_OFFSET + MAX_NOTE  # 55025
SEPARATOR = SPECIAL_OFFSET
AUTOREGRESS = SPECIAL_OFFSET + 1
ANTICIPATE = SPECIAL_OFFSET + 2
VOCAB_SIZE = ANTICIPATE + 1  # 55028

DELTA = 5 * TIME_RESOLUTION  # anticipation interval: controls sit 5 s ahead of their time
EVENT_SIZE = 3
CONTEXT_SIZE = 1024  # one flag + 341 triplets
EVENTS_PER_LINE = (CONTEXT_SIZE - 1) // EVENT_SIZE  # 341

# MIDI-LLM's merged vocabulary: Llama 3's 128,256 text ids come first.
LLAMA3_TEXT_VOCAB = 128256
MIDI_LLM_VOCAB = 183286  # 128256 + 55030 rows (two unused)


def to_llm_id(amt_id: int, text_vocab_size: int = LLAMA3_TEXT_VOCAB) -> int:
    """Music id in a merged vocabulary: text vocabulary size + AMT id."""
    if not 0 <= amt_id < VOCAB_SIZE:
        raise ValueError(f"AMT id {amt_id} outside 0..{VOCAB_SIZE - 1}")
    return text_vocab_size + amt_id


def from_llm_id(llm_id: int, text_vocab_size: int = LLAMA3_TEXT_VOCAB) -> int | None:
    """AMT id of a merged-vocabulary id, or None for a text id or an unused row."""
    amt = llm_id - text_vocab_size
    return amt if 0 <= amt < VOCAB_SIZE else None


def to_llm_ids(amt_ids, text_vocab_size: int = LLAMA3_TEXT_VOCAB) -> list[int]:
    return [to_llm_id(int(t), text_vocab_size) for t in amt_ids]


def from_llm_ids(llm_ids, text_vocab_size: int = LLAMA3_TEXT_VOCAB) -> list[int]:
    """AMT ids of the music ids in `llm_ids`; text ids are dropped (the decoder never needs them)."""
    out = []
    for t in llm_ids:
        amt = from_llm_id(int(t), text_vocab_size)
        if amt is not None:
            out.append(amt)
    return out


def music_id_range(text_vocab_size: int = LLAMA3_TEXT_VOCAB) -> tuple[int, int]:
    """[start, stop) of the music ids in a merged vocabulary."""
    return text_vocab_size, text_vocab_size + VOCAB_SIZE

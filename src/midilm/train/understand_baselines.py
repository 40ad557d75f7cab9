"""Training of the token-input understanding baselines (ABC notation, native AMT tokens) with the HF Trainer.

The same rows, conversations and LoRA settings as MIDI-LLaMA's stage 2 (`midilm.train.understand`), so the
comparison isolates how the music enters the model:

- `abc`: the base LLM is MIDI-LLaMA's own (`--llm`, e.g. the stage-0 text LM); the music is ABC text.
- `amt`: the base LLM is a text-to-MIDI model with the AMT vocabulary (`--llm`, e.g. the shipped
  midilm-t2m-tiny); the music is its AMT ids, and the model learns to read what it was trained to write.

There is no projector, so there is no stage 1: one LoRA stage with the stage-2 data (or, with
`full_finetune`, all weights: what a text-to-MIDI model needs, since it never learned to write text). The loss is the
cross-entropy of the answers over the text rows of the output layer only (for an expanded model the
55,030 music rows would cost 28 times the text ones and can never be an answer). The music ids of every
row are computed once and cached as JSON.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from midilm.train.understand import UnderstandConfig, example_turns, load_train_rows, transpose_shifts

REPRESENTATIONS = {"abc": "abc", "amt": "amt-native"}


@dataclass
class BaselineConfig(UnderstandConfig):
    representation: str = "abc"  # abc | amt
    max_midi_tokens: int = 384
    # all weights train instead of LoRA: a text-to-MIDI model was never taught to write text, and LoRA alone
    # leaves its output rows as they were (its answers stayed punctuation in our runs)
    full_finetune: bool = False

    def kind(self) -> str:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be abc or amt, got {self.representation!r}")
        return REPRESENTATIONS[self.representation]


def row_piece(row: dict):
    """The piece of a dataset row: the whole file, or the clip's notes moved to start at a bar line."""
    from midilm.music.midi_io import read_midi

    piece = read_midi(row["path"])
    if row.get("unit") == "clip":
        piece = piece.excerpt(float(row["clip_start"]), float(row["clip_end"]))
    return piece


def row_midi_ids(rows: list[dict], kind: str, tokenizer, layout, max_tokens: int, cache_dir: Path) -> list:
    """Music ids of every row (None where the file cannot be read or holds no notes), cached on disk."""
    from tqdm.auto import tqdm

    from midilm.errors import MidilmError
    from midilm.models.token_input import midi_ids

    vocab = hashlib.sha1(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()[:8]
    key = json.dumps([[r["path"], r.get("unit"), r.get("clip_start"), r.get("clip_end")] for r in rows])
    name = hashlib.sha1(f"{kind}|{max_tokens}|{vocab}|{key}".encode()).hexdigest()[:16]
    path = cache_dir / f"midi-ids-{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    out = []
    for row in tqdm(rows, desc=f"{kind} ids", unit="row", mininterval=5):
        try:
            out.append(midi_ids(kind, tokenizer, layout, row_piece(row), max_tokens))
        except (MidilmError, ValueError, OSError):
            out.append(None)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


class TokenExamples:
    """Item i: a seeded stage-2 conversation about row i mod rows, with the row's music in the MIDI slot.

    With `transpose`, conversations are drawn exactly as MIDI-LLaMA's stage 2 draws them
    (`example_turns`); a transposed one gets the music ids of the row's piece moved by that interval,
    computed when the example is drawn (there are too many to cache)."""

    def __init__(self, rows, ids, tokenizer, cfg: BaselineConfig, layout=None):
        self.rows, self.ids, self.tok, self.cfg, self.layout = rows, ids, tokenizer, cfg, layout
        self.shifts = transpose_shifts(cfg.transpose)

    def __len__(self) -> int:
        return len(self.rows) * 16

    def __getitem__(self, i: int) -> dict:
        from midilm.models.conversation import IGNORE, encode_conversation
        from midilm.models.token_input import midi_ids

        rng = random.Random(self.cfg.seed * 1_000_003 + i)
        row, music = self.rows[i % len(self.rows)], self.ids[i % len(self.rows)]
        turns, shift = example_turns(row, 2, rng, self.cfg, self.shifts)
        if shift:
            piece = row_piece(row).transposed(shift)
            music = midi_ids(self.cfg.kind(), self.tok, self.layout, piece, self.cfg.max_midi_tokens)
        enc = encode_conversation(self.tok, turns)
        # the conversation is kept whole where it can be; the music gives way first (whole events for AMT)
        room = max(self.cfg.max_len - len(enc.before) - len(enc.after), 0)
        if len(music) > room:
            music = music[: room - room % 3 if self.cfg.representation == "amt" else room]
        after, labels = enc.after[: self.cfg.max_len - len(enc.before) - len(music)], enc.labels
        labels = labels[: len(after)]
        return {"input_ids": enc.before + music + after,
                "labels": [IGNORE] * (len(enc.before) + len(music)) + labels}


def collate(pad_id: int):
    import torch

    from midilm.models.conversation import IGNORE

    def run(items: list[dict]) -> dict:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(it["input_ids"]), torch.tensor(it["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return run


def text_rows_lm(peft_model, n_text: int):
    """A module whose loss scores the answers over the first `n_text` output rows only."""
    from torch import nn

    class TextRowsLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = peft_model

        def forward(self, input_ids, attention_mask, labels):
            base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
            hidden = base.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            keep = labels[:, 1:] != -100  # only answer positions reach the output layer
            if not keep.any():
                return {"loss": hidden.sum() * 0.0}
            logits = hidden[:, :-1][keep] @ base.lm_head.weight[:n_text].T
            return {"loss": nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep])}

    return TextRowsLM()


def train_baseline(cfg: BaselineConfig) -> Path:
    """Train one token-input baseline and save a directory `load_understanding_model` reads."""
    import torch
    from peft import LoraConfig, get_peft_model

    from midilm.models.token_input import load_llm, text_rows
    from midilm.train.understand import finish_run, resume_flag, trainer_class, training_args

    kind = cfg.kind()
    transpose_shifts(cfg.transpose)  # a bad interval fails before any loading
    if not cfg.llm:
        raise ValueError("--llm is needed: the base causal LM directory (the stage-0 LM for abc, a t2m model for amt)")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    llm, tokenizer, layout = load_llm(cfg.llm, trainable=True)
    if kind == "amt-native" and layout is None:
        raise ValueError(f"{cfg.llm} has no music vocabulary (midilm.json): amt needs a text-to-MIDI model")
    torch.manual_seed(cfg.seed)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    peft_model = llm if cfg.full_finetune else get_peft_model(llm, lora)
    rows = load_train_rows(cfg.data, cfg.max_rows, cfg.seed)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    ids = row_midi_ids(rows, kind, tokenizer, layout, cfg.max_midi_tokens, cache)
    keep = [i for i, x in enumerate(ids) if x]
    if not keep:
        raise ValueError(f"no readable training rows in {cfg.data}")
    data = TokenExamples([rows[i] for i in keep], [ids[i] for i in keep], tokenizer, cfg, layout)
    model = text_rows_lm(peft_model, text_rows(llm, tokenizer, layout))
    trainer = trainer_class()(model=model, args=training_args(cfg, out, "lora"), train_dataset=data,
                               data_collator=collate(tokenizer.pad_token_id))
    trainer.train(resume_from_checkpoint=resume_flag(cfg, out, "lora"))
    history = [dict(h, stage="lora") for h in trainer.state.log_history]

    llm_dir = out / "llm"
    if llm_dir.exists():
        shutil.rmtree(llm_dir)
    src = Path(cfg.llm)
    shutil.copytree(src, llm_dir, ignore=lambda d, names: [n for n in names if (Path(d) / n).is_dir()
                                                            or not n.endswith((".json", ".safetensors", ".txt"))
                                                            or n in ("loss_history.json", "train_config.json")])
    if cfg.full_finetune:
        shutil.rmtree(out / "adapter", ignore_errors=True)
        llm.save_pretrained(llm_dir, safe_serialization=True)
    else:
        peft_model.save_pretrained(out / "adapter", safe_serialization=True)
    from midilm.models.manifest import write_manifest

    write_manifest(out, kind, max_midi_tokens=cfg.max_midi_tokens, base_llm=str(src))
    finish_run(cfg, out, history, f"{kind} baseline (LoRA)")
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return out

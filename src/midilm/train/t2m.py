"""Two-stage training of a text-to-MIDI model (MIDI-LLM's recipe) with the Hugging Face Trainer.

Stage 1 (continued pretraining): a mix of music text (captions, questions and answers) and standalone
AMT training lines, loss on every token. Stage 2 (supervised fine-tuning): MIDI-LLM's prompt with a
caption, then the music; loss on the music only; caption dropout; transposition, tempo scaling and
instrument reassignment with the caption rewritten to match; AMT anticipation (an instrument or a span
given as controls) so accompaniment and infilling work. The prompt, including the AUTOREGRESS/ANTICIPATE
flag that ends it, is never a target. Whole examples are packed into rows of `max_len` ids with their own
positions and no attention across them (`midilm.train.packing`).

The loss is computed inside the model's forward (`midilm.train.lm_loss.TrainingLM`), per slot block by
default, normalised by the Trainer's target count over the accumulated and global batch: DDP, FSDP,
DeepSpeed (configs in `configs/accelerate/`) and gradient accumulation see one ordinary forward.

Defaults depend on the start: a small Llama from scratch (learning rate 1e-3, 1,024 ids), or a real LLM
with `init_from` (a learning rate by its size, 2,048 ids, bf16 mixed precision on a GPU that has it);
every resolved value is printed at start and each can be set explicitly. `dry_run` builds a random model
of MIDI-LLM's exact shape, takes one training step, saves and reloads it, and reports its memory.
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from midilm.codecs.amt import vocab as V
from midilm.codecs.amt.lines import anticipate, split_instruments, split_spans, training_lines
from midilm.models.vocab import MusicLayout
from midilm.train.packing import (
    IGNORE,
    MixedStream,
    PackedStream,
    RowStream,
    SkipExample,
    collate_rows,
    iterable_dataset,
    single_rows,
)

__all__ = ["T2MConfig", "Piece", "PackedStream", "SkipExample", "load_pieces", "make_caption", "sft_example",
           "Distilled", "load_distilled", "distilled_example", "stage2_example", "key_start_example", "stage2_stream",
           "text_examples", "build_model",
           "resolve_defaults", "train_t2m", "dry_run", "loss_blocks", "block_loss"]


@dataclass
class T2MConfig:
    data: str  # a dataset built by `midilm dataset build`
    output: str
    init_from: str | None = None  # a local HF causal LM to expand; None trains a small Llama from scratch
    init_scheme: str = "block-mean"  # never worse than mean by early loss (docs/init_schemes.md)
    text_vocab: int = 2048  # BPE size when training from scratch
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 704
    max_len: int | None = None  # None: 1,024 from scratch, 2,048 from a real LLM (resolve_defaults)
    stage1_steps: int = 200
    stage2_steps: int = 600
    batch_size: int = 8
    grad_accum: int = 1
    lr: float | None = None  # None: 1e-3 from scratch, by model size from a real LLM (resolve_defaults)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # 0: no clipping
    seed: int = 0
    caption_dropout: float = 0.1
    p_transpose: float = 0.5
    p_tempo: float = 0.3
    p_reassign: float = 0.25
    p_anticipate: float = 0.15
    # Share of stage-2 examples whose music is cut to `short_len` ids (a caption and its first few dozen
    # events): packed side by side, they show more caption-conditioned starts per token (the first notes set
    # the key), while the rest still fill whole rows so long positions keep being trained. Not yet shown to
    # help: docs/t2m_training.md section 7.
    p_short: float = 0.0
    short_len: int = 240
    # Self-distillation (scripts/t2m_distill.py): a JSONL of {"caption", "events"} rows, the model's own steered
    # outputs that passed its filters (in the caption's key, no long silence, a melody that moves), and the share
    # of stage-2 examples drawn from it instead of a real piece. Off by default; the stream is unchanged when off.
    distill: str | None = None
    p_distill: float = 0.0
    # Key-start rows (issue 12: the model alone follows a named key): this share of stage-2 rows is packed with
    # short examples, each a keyed piece transposed to a random key, a caption that names that key, and the
    # piece's first `key_start_len` music ids. The key a caption names matters most where no notes precede, and
    # an ordinary row holds one such start; a key-start row holds several. Whole rows, so the other rows stay
    # whole and long positions keep being trained. Off by default; the stream is unchanged when off.
    p_key_start: float = 0.0
    key_start_len: int = 96
    # The share of key-start examples whose caption names no key, with the piece left in its own key: without
    # them the named examples' random keys also flatten what the model writes when the caption is silent on the
    # key, where the data's common keys (G and D major for folk tunes) are the best guess.
    key_start_unnamed: float = 0.0
    block_loss: bool = True
    bf16: bool | None = None  # None: on for a real LLM on a GPU with bf16, else off
    optim: str = "adamw_torch"  # any TrainingArguments optim; "sgd" has no optimizer state
    logging_steps: int = 10
    save_steps: int = 200
    resume: bool = False
    max_pieces: int | None = None
    eval_split: str | None = None  # e.g. "validation": stage-2 loss on that split's pieces every eval_steps
    eval_steps: int = 200
    eval_pieces: int = 64
    extra: dict = field(default_factory=dict)


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Piece:
    events: list[int]
    analysis: dict
    captions: list[str]
    source: str
    qa: list[dict] = field(default_factory=list)  # the dataset's question-answer pairs (stage-1 text)


def load_pieces(dataset_dir: str | Path, split: str = "train", limit: int | None = None) -> list[Piece]:
    """Whole pieces of a split with their AMT events; unreadable files are skipped."""
    from midilm.annotate.dataset import load_rows
    from midilm.codecs.amt.encode import encode_midi
    from midilm.errors import MidilmError

    pieces = []
    for row in load_rows(dataset_dir, split):
        if row.get("unit") != "piece":
            continue
        if row.get("split") != split:
            raise ValueError(f"row {row.get('path')} of split {row.get('split')} found in {split}")
        if row.get("events") is not None:  # a packed dataset (annotate.dataset.pack_for_training): no MIDI needed
            events = [int(t) for t in row["events"]]
        else:
            try:
                events = encode_midi(row["path"])
            except MidilmError:
                continue
        analysis = {k: v for k, v in row.items() if k not in ("captions", "qa")}
        pieces.append(Piece(events, analysis, list(row.get("captions") or []), row.get("source", ""),
                            [q for q in row.get("qa") or [] if isinstance(q, dict)]))
        if limit and len(pieces) >= limit:
            break
    return pieces


def _window(events: list[int], rng: random.Random, budget: int) -> list[int]:
    """Up to `budget` ids of consecutive events inside one 100 s window, re-zeroed to start at 0."""
    t = np.asarray(events, dtype=np.int64).reshape(-1, 3)
    if not len(t):
        return []
    n_fit = max(budget // 3, 1)
    start = 0 if rng.random() < 0.5 or len(t) <= n_fit else rng.randrange(0, len(t) - n_fit + 1)
    return _events_from(t, start, n_fit)


def _events_from(t: np.ndarray, start: int, n_fit: int) -> list[int]:
    """Up to `n_fit` (time, duration, note) rows of `t` from row `start`, inside 100 s, re-zeroed to start at 0."""
    if not len(t):
        return []
    w = t[start : start + n_fit].copy()
    w[:, 0] -= w[0, 0]
    w = w[w[:, 0] < V.MAX_TIME]
    return w.reshape(-1).tolist()


def make_caption(analysis: dict, rng: random.Random) -> str:
    """A caption written from the (possibly augmented) analysis; SkipExample when none can be written, so an
    example never trains on an empty or stale caption (the stream counts and reports the skips)."""
    from midilm.annotate.captions import make_caption as caption_from_analysis

    try:
        text = caption_from_analysis(analysis, rng, rng.choice(["short", "medium", "medium", "long"]))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise SkipExample(f"caption writer failed ({type(e).__name__})") from e
    if not text or not text.strip():
        raise SkipExample("caption writer gave an empty caption")
    return text


def sft_example(piece: Piece, layout: MusicLayout, tokenizer, cfg: T2MConfig, rng: random.Random):
    """One stage-2 example: (ids, labels) with the prompt and its closing flag masked out of the loss."""
    from midilm.train import augment as A

    events, analysis = list(piece.events), dict(piece.analysis)
    if rng.random() < cfg.p_transpose:
        k = rng.randint(-5, 6)
        events, analysis = A.transpose_events(events, k), A.transpose_analysis(analysis, k)
    if rng.random() < cfg.p_tempo:
        f = rng.uniform(0.8, 1.25)
        events, analysis = A.scale_tempo(events, f), A.scale_tempo_analysis(analysis, f)
    if rng.random() < cfg.p_reassign:
        events, mapping = A.reassign_instruments(events, rng)
        analysis = A.reassign_analysis(analysis, mapping, events)
    caption = None
    if rng.random() >= cfg.caption_dropout:
        caption = make_caption(analysis, rng)
    prompt = tokenizer(layout.prompt_text(caption), add_special_tokens=True)["input_ids"]
    flag = V.AUTOREGRESS
    budget = cfg.max_len - len(prompt) - 1
    if cfg.p_short > 0 and rng.random() < cfg.p_short:  # no draw when off: older runs' streams stay as they were
        budget = min(budget, cfg.short_len)
    music = _window(events, rng, budget)
    if music and rng.random() < cfg.p_anticipate:
        from midilm.codecs.amt.lines import instruments_of

        instruments = instruments_of(music)
        if len(instruments) > 1:
            given = rng.sample(instruments, rng.randint(1, len(instruments) - 1))
            ev, controls = split_instruments(music, given)
        else:
            ev, controls = split_spans(music, 0.05, np.random.default_rng(rng.randrange(1 << 30)))
        music, _ = anticipate(ev, controls)
        music = music[:budget]
        music = music[: len(music) - len(music) % 3]
        flag = V.ANTICIPATE
    return music_example(prompt, flag, music, layout)


def music_example(prompt: list[int], flag: int, music: list[int], layout: MusicLayout):
    """(ids, labels) of a stage-2 example: the prompt's ids, the flag that says how the music follows (part of
    the prompt, so never a target), then the music ids, the only targets."""
    head = prompt + [layout.music_id(flag)]
    ids = head + [layout.music_id(t) for t in music]
    return ids, [IGNORE] * len(head) + ids[len(head) :]


@dataclass
class Distilled:
    caption: str
    events: list[int]


def load_distilled(path: str | Path) -> list[Distilled]:
    """The rows of a self-distillation set (`scripts/t2m_distill.py select`): a caption and AMT events each."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            events = [int(t) for t in row.get("events") or []]
            if not row.get("caption") or not events or len(events) % 3:
                raise ValueError(f"{path}:{n}: a distilled row needs a caption and whole (time, duration, note) events")
            rows.append(Distilled(str(row["caption"]), events))
    if not rows:
        raise ValueError(f"{path}: no distilled rows")
    return rows


def distilled_example(row: Distilled, layout: MusicLayout, tokenizer, cfg: T2MConfig):
    """A stage-2 example from a distilled row, as `sft_example` lays one out: the caption's prompt and flag masked,
    the music from its start (where the key is set) as far as `max_len` allows. No augmentation and no caption
    dropout: the row teaches what this caption asks for."""
    prompt = tokenizer(layout.prompt_text(row.caption), add_special_tokens=True)["input_ids"]
    budget = cfg.max_len - len(prompt) - 1
    music = row.events[: max(budget, 0) // 3 * 3]
    if not music:
        raise SkipExample("distilled caption leaves no room for music")
    return music_example(prompt, V.AUTOREGRESS, music, layout)


def stage2_example(pieces: list[Piece], layout: MusicLayout, tokenizer, cfg: T2MConfig,
                   distilled: list[Distilled] | None = None):
    """The stage-2 example function of a PackedStream: a real piece (`sft_example`), or with probability
    `cfg.p_distill` a distilled row; with no distilled rows or p_distill 0 it draws exactly as before."""
    mix = bool(distilled) and cfg.p_distill > 0

    def example(r: random.Random):
        if mix and r.random() < cfg.p_distill:
            return distilled_example(r.choice(distilled), layout, tokenizer, cfg)
        return sft_example(r.choice(pieces), layout, tokenizer, cfg, r)

    return example


KEY_CAPTION_TRIES = 16
_NAMES_A_MODE = re.compile(r"\b(major|minor)\b", re.IGNORECASE)  # a caption naming no key names no mode


def key_start_example(pieces: list[Piece], layout: MusicLayout, tokenizer, cfg: T2MConfig, rng: random.Random):
    """A short stage-2 example for the key: a piece with a key (from `pieces`) transposed by -5..+6 semitones, a
    caption drawn until it names the transposed key, and the first `cfg.key_start_len` music ids of the piece.
    With chance `cfg.key_start_unnamed` the piece stays in its own key and the caption names no key instead.
    Tempo scaling as in `sft_example`; no instrument reassignment, anticipation or caption dropout (the
    example is about the key a caption names, or leaves unnamed)."""
    from midilm.annotate.captions import spelled_key
    from midilm.train import augment as A

    piece = rng.choice(pieces)
    named = cfg.key_start_unnamed <= 0 or rng.random() >= cfg.key_start_unnamed
    k = rng.randint(-5, 6) if named else 0
    events, analysis = A.transpose_events(list(piece.events), k), A.transpose_analysis(dict(piece.analysis), k)
    if rng.random() < cfg.p_tempo:
        f = rng.uniform(0.8, 1.25)
        events, analysis = A.scale_tempo(events, f), A.scale_tempo_analysis(analysis, f)
    key = str(analysis.get("key") or "")
    if not key:
        raise SkipExample("key-start piece has no key")
    names = (key, spelled_key(key))
    for _ in range(KEY_CAPTION_TRIES):
        caption = make_caption(analysis, rng)
        if any(n in caption for n in names) if named else not _NAMES_A_MODE.search(caption):
            break
    else:
        raise SkipExample("no caption named the key" if named else "every caption named a key")
    prompt = tokenizer(layout.prompt_text(caption), add_special_tokens=True)["input_ids"]
    budget = min(cfg.key_start_len, cfg.max_len - len(prompt) - 1)
    music = _events_from(np.asarray(events, dtype=np.int64).reshape(-1, 3), 0, max(budget // 3, 1))
    if not music:
        raise SkipExample("key-start piece has no music")
    return music_example(prompt, V.AUTOREGRESS, music, layout)


def stage2_stream(pieces: list[Piece], layout: MusicLayout, tokenizer, cfg: T2MConfig, pad_id: int,
                  distilled: list[Distilled] | None = None):
    """The stage-2 row stream: packed `stage2_example` rows, mixed row by row with key-start rows when
    `cfg.p_key_start` > 0 (the same stream as before when it is 0)."""
    stream = PackedStream(stage2_example(pieces, layout, tokenizer, cfg, distilled), cfg.max_len, pad_id,
                          cfg.seed + 1)
    if cfg.p_key_start <= 0:
        return stream
    keyed = [p for p in pieces if p.analysis.get("key")]
    if not keyed:
        raise ValueError("p_key_start needs training pieces with a key")

    def example(r: random.Random):
        return key_start_example(keyed, layout, tokenizer, cfg, r)

    starts = PackedStream(example, cfg.max_len, pad_id, cfg.seed + 2)
    return MixedStream([(stream, 1.0 - cfg.p_key_start), (starts, cfg.p_key_start)], cfg.seed + 3)


def text_examples(pieces: list[Piece], rng: random.Random) -> list[str]:
    """Music text for stage 1: captions and question-answer pairs."""
    texts = []
    for p in pieces:
        texts += p.captions
        for qa in p.qa:
            if qa.get("question"):
                texts.append(f"{qa['question']} {qa.get('answer', '')}")
    rng.shuffle(texts)
    return texts


# --- model -----------------------------------------------------------------------------------------

SCRATCH_LR, SCRATCH_LEN, LLM_LEN = 1e-3, 1024, 2048
# Learning rate by the size of a real LLM that is expanded (our choice for continued pretraining plus
# fine-tuning of all weights; smaller steps for larger models): (parameters up to, learning rate).
LLM_LR = ((2e9, 2e-4), (1e10, 1e-4), (float("inf"), 5e-5))


def resolve_defaults(cfg: T2MConfig, n_params: int, bf16_available: bool) -> tuple[T2MConfig, list[str]]:
    """Fill the settings left None by the start (scratch or `init_from`) and the model's size; the lines say
    what was chosen and how to change it."""
    lines = []
    real = bool(cfg.init_from)
    what = f"a {n_params / 1e9:.2f} B-parameter LLM" if real else "a small model from scratch"
    changes = {}
    if cfg.lr is None:
        changes["lr"] = next(lr for bound, lr in LLM_LR if n_params <= bound) if real else SCRATCH_LR
        lines.append(f"learning rate {changes['lr']:g} (default for {what}; --lr to change)")
    if cfg.max_len is None:
        changes["max_len"] = LLM_LEN if real else SCRATCH_LEN
        lines.append(f"sequence length {changes['max_len']} (default for {what}; --max-len to change)")
    if cfg.bf16 is None:
        changes["bf16"] = real and bf16_available
        why = "a real LLM on a GPU with bf16" if changes["bf16"] else (
            "no GPU with bf16 here" if real else "a small model from scratch")
        lines.append(f"bf16 mixed precision {'on' if changes['bf16'] else 'off'} ({why}; --bf16/--no-bf16 to change)")
    return replace(cfg, **changes), lines


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def build_model(cfg: T2MConfig, texts: list[str]):
    """A fresh small Llama with our BPE text vocabulary plus the AMT block, or an expanded local LM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from midilm.models.tokenizer import train_text_tokenizer
    from midilm.models.vocab import expand_vocabulary

    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        tokenizer = AutoTokenizer.from_pretrained(cfg.init_from, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, local_files_only=True, use_safetensors=True,
                                                     dtype=torch.float32)  # fp32 master weights; bf16 by autocast
        layout = expand_vocabulary(model, len(tokenizer), init=cfg.init_scheme, seed=cfg.seed)
        return model, tokenizer, layout
    tokenizer = train_text_tokenizer(texts or ["music"], cfg.text_vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=max(cfg.max_len or SCRATCH_LEN, 2048), tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0,
    )
    # the text model, then the music rows by the chosen scheme, exactly as for a real LLM
    model = LlamaForCausalLM(config)
    layout = expand_vocabulary(model, len(tokenizer), init=cfg.init_scheme, seed=cfg.seed)
    return model, tokenizer, layout


def training_args(cfg: T2MConfig, output_dir: Path, steps: int, **overrides):
    """The TrainingArguments of one stage."""
    import torch
    from transformers import TrainingArguments

    values = dict(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, warmup_steps=int(cfg.warmup_ratio * steps),
        lr_scheduler_type="cosine", weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2, bf16=bool(cfg.bf16),
        optim=cfg.optim, report_to=[],
        seed=cfg.seed, dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False,
        dataloader_pin_memory=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
    )
    values.update(overrides)
    return TrainingArguments(**values)


def make_trainer(model, stream: RowStream, layout: MusicLayout, args, use_block_loss: bool = True, **kwargs):
    """A T2MTrainer whose model computes its loss in its own forward (per block or over the vocabulary)."""
    from midilm.train.lm_loss import T2MTrainer, TrainingLM

    wrapped = model if isinstance(model, TrainingLM) else TrainingLM(
        model, loss_blocks(layout) if use_block_loss else None)
    return T2MTrainer(model=wrapped, args=args, train_dataset=iterable_dataset(stream), data_collator=collate_rows,
                      **kwargs)


def eval_rows(pieces: list[Piece], layout: MusicLayout, tokenizer, cfg: T2MConfig, pad_id: int) -> list[dict]:
    """A fixed stage-2 evaluation set: one un-augmented example per piece (a caption, no dropout), one row each."""
    plain = replace(cfg, caption_dropout=0.0, p_transpose=0.0, p_tempo=0.0, p_reassign=0.0, p_anticipate=0.0)
    rng = random.Random(cfg.seed)
    examples = []
    for p in pieces:
        try:
            examples.append(sft_example(p, layout, tokenizer, plain, rng))
        except SkipExample:
            continue
    return single_rows(examples, cfg.max_len, pad_id)


def run_stage(model, stream: RowStream, cfg: T2MConfig, layout: MusicLayout, out_dir: Path, steps: int,
              name: str, eval_dataset: list[dict] | None = None):
    """Train one stage; returns (the trainer, its log history tagged with the stage)."""
    ckpt = out_dir / f"checkpoints-{name}"
    extra = {}
    if eval_dataset:
        extra = dict(eval_strategy="steps", eval_steps=cfg.eval_steps, per_device_eval_batch_size=cfg.batch_size,
                     prediction_loss_only=True)
    trainer = make_trainer(model, stream, layout, training_args(cfg, ckpt, steps, **extra), cfg.block_loss,
                           eval_dataset=eval_dataset or None)
    resume = cfg.resume and any(ckpt.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    if stream.skipped:
        print(f"{name}: skipped examples: {dict(stream.skipped)}", file=sys.stderr)
    return trainer, [dict(h, stage=name) for h in trainer.state.log_history]


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    for stage in dict.fromkeys(h["stage"] for h in history):
        pts = [(h["step"], h["loss"]) for h in history if h["stage"] == stage and "loss" in h]
        if pts:
            xs, ys = zip(*pts)
            ax.plot([x + offset for x in xs], ys, label=stage)
            offset += max(xs)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title("midilm text-to-MIDI training")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0  # set by torchrun / accelerate launch for every process


def train_t2m(cfg: T2MConfig) -> Path:
    """Run both stages and save a loadable model directory at `cfg.output`."""
    out = Path(cfg.output)
    main = _is_main_process()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    pieces = load_pieces(cfg.data, "train", cfg.max_pieces)
    if not pieces:
        raise ValueError(f"no training pieces in {cfg.data}")
    texts = text_examples(pieces, rng)
    model, tokenizer, layout = build_model(cfg, texts)
    cfg, lines = resolve_defaults(cfg, sum(p.numel() for p in model.parameters()), _bf16_available())
    if main:
        for line in lines:
            print(f"midilm train t2m: {line}", file=sys.stderr)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    history: list[dict] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = None

    if cfg.stage1_steps:
        lines_ids = [[layout.music_id(t) for t in line] for line in training_lines(p.events for p in pieces)]

        def stage1_example(r: random.Random):
            if lines_ids and r.random() < 0.6:
                line = r.choice(lines_ids)[: cfg.max_len]
                return line, list(line)
            ids = tokenizer(r.choice(texts) if texts else "music", add_special_tokens=True)["input_ids"]
            ids = ids + [tokenizer.eos_token_id]
            return ids, list(ids)

        trainer, h = run_stage(model, PackedStream(stage1_example, cfg.max_len, pad, cfg.seed), cfg, layout, out,
                               cfg.stage1_steps, "stage1")
        history += h
    if cfg.stage2_steps:
        held = None
        if cfg.eval_split:
            held = eval_rows(load_pieces(cfg.data, cfg.eval_split, cfg.eval_pieces), layout, tokenizer, cfg, pad)
            if not held:
                raise ValueError(f"no {cfg.eval_split} pieces in {cfg.data} to evaluate on")
        distilled = load_distilled(cfg.distill) if cfg.distill and cfg.p_distill > 0 else None
        trainer, h = run_stage(model, stage2_stream(pieces, layout, tokenizer, cfg, pad, distilled), cfg, layout,
                               out, cfg.stage2_steps, "stage2", held)
        history += h

    if trainer is not None:
        trainer.save_model(str(out))  # gathers sharded (FSDP) weights; writes on the main process only
    elif main:
        model.save_pretrained(out, safe_serialization=True)
    if main:
        tokenizer.save_pretrained(out)
        layout.save(out)
        (out / "loss_history.json").write_text(json.dumps(history, indent=1) + "\n")
        plot_losses(history, out / "loss.png")
    return out


# --- a dry run at MIDI-LLM's real shape ------------------------------------------------------------

# Llama-3.2-1B's configuration (MIDI-LLM's base) with MIDI-LLM's merged vocabulary.
LLAMA_3_2_1B = dict(
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
    head_dim=64, rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=True,
    rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    bos_token_id=128000, eos_token_id=128001,
)


def real_shape_config():
    """A LlamaConfig of MIDI-LLM's released checkpoint (Llama-3.2-1B, 183,286 rows)."""
    from transformers import LlamaConfig

    from midilm.codecs.amt.vocab import MIDI_LLM_VOCAB

    return LlamaConfig(vocab_size=MIDI_LLM_VOCAB, **LLAMA_3_2_1B)


def count_params(config) -> int:
    """Parameters of a Llama configuration (tied or not), without building it."""
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or h // config.num_attention_heads
    attn = h * config.num_attention_heads * hd * 2 + h * config.num_key_value_heads * hd * 2
    per_layer = attn + 3 * h * i + 2 * h
    embed = config.vocab_size * h
    return embed * (1 if config.tie_word_embeddings else 2) + n * per_layer + h


def memory_estimate(config, seq_len: int) -> list[str]:
    """What training this configuration needs, as lines (fp32 master weights, as the Trainer keeps them)."""
    n = count_params(config)
    gb = 1e9
    act = 34 * seq_len * config.hidden_size * config.num_hidden_layers  # bf16 activations, flash attention
    return [
        f"parameters {n / 1e9:.3f} B (vocabulary {config.vocab_size:,} x {config.hidden_size:,}, "
        f"{'tied' if config.tie_word_embeddings else 'untied'})",
        f"fp32 weights {4 * n / gb:.1f} GB + gradients {4 * n / gb:.1f} GB + AdamW moments {8 * n / gb:.1f} GB = "
        f"{16 * n / gb:.1f} GB before activations (bf16 autocast keeps fp32 master weights: the same)",
        f"activations about {act / gb:.1f} GB per {seq_len:,}-id sequence (bf16, flash attention; "
        "more without it); the per-block loss never builds the full 183,286-wide logits",
        f"with --optim sgd (no optimizer state, as this dry run on a CPU uses): {8 * n / gb:.1f} GB before activations",
    ]


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


def dry_run(output: str | None = None, seq_len: int = 64, steps: int = 1, optim: str = "sgd",
            bf16: bool | None = None, seed: int = 0) -> dict:
    """Build a random-weight model of MIDI-LLM's exact shape, train `steps` steps on `seq_len`-id packed
    examples through the same trainer as `train_t2m`, save it, reload it and check the trained weights came
    back; prints the memory estimate and the measured peak RSS. Writes to `output` or a temporary folder
    (removed afterwards)."""
    import gc
    import shutil
    import tempfile
    import time

    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from midilm.codecs.amt.encode import encode_midi
    from midilm.codecs.amt.vocab import LLAMA3_TEXT_VOCAB
    from midilm.music.examples import example_piece
    from midilm.music.midi_io import midi_bytes

    def say(line: str) -> None:
        print(f"dry run: {line}", file=sys.stderr, flush=True)

    config = real_shape_config()
    layout = MusicLayout(LLAMA3_TEXT_VOCAB)
    for line in memory_estimate(config, LLM_LEN):
        say(line)
    bf16 = _bf16_available() if bf16 is None else bf16
    temp = output is None
    out = Path(tempfile.mkdtemp(prefix="midilm-dry-run-")) if temp else Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"params": count_params(config)}
    try:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        report["build_seconds"] = round(time.perf_counter() - t0, 1)
        say(f"built a random-weight model in {report['build_seconds']} s "
            f"({sum(p.numel() for p in model.parameters()):,} parameters)")
        events = encode_midi(midi_bytes(example_piece()))

        def example(r: random.Random):
            prompt = [128000] + [r.randrange(1000, 120000) for _ in range(max(seq_len // 8, 2))]
            head = prompt + [layout.music_id(V.AUTOREGRESS)]
            music = _window(events, r, seq_len - len(head))
            ids = head + [layout.music_id(t) for t in music]
            return ids, [IGNORE] * len(head) + ids[len(head):]

        cfg = T2MConfig(data="", output=str(out), lr=1e-4, max_len=seq_len, batch_size=1, bf16=bf16, optim=optim,
                        seed=seed, logging_steps=1, save_steps=10**9)
        probe = model.model.layers[0].self_attn.q_proj.weight
        before = probe[:4, :8].detach().clone()
        args = training_args(cfg, out / "checkpoints", steps, save_strategy="no", warmup_steps=0,
                             lr_scheduler_type="constant", disable_tqdm=True)
        trainer = make_trainer(model, PackedStream(example, seq_len, 0, seed), layout, args)
        t0 = time.perf_counter()
        trainer.train()
        report["step_seconds"] = round((time.perf_counter() - t0) / steps, 1)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        report["loss"] = losses[-1] if losses else None
        after = probe[:4, :8].detach().clone()
        if torch.equal(before, after):
            raise RuntimeError("the training step left the weights unchanged")
        say(f"{steps} training step(s) of {seq_len} ids ({optim}, bf16 {'on' if bf16 else 'off'}): "
            f"{report['step_seconds']} s a step, loss {report['loss']}")
        t0 = time.perf_counter()
        trainer.save_model(str(out))
        layout.save(out)
        report["save_seconds"] = round(time.perf_counter() - t0, 1)
        del trainer, model, probe
        gc.collect()
        t0 = time.perf_counter()
        again = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, use_safetensors=True,
                                                     dtype=torch.float32)
        report["load_seconds"] = round(time.perf_counter() - t0, 1)
        if not torch.equal(again.model.layers[0].self_attn.q_proj.weight[:4, :8], after):
            raise RuntimeError("the reloaded weights differ from the trained ones")
        if again.config.vocab_size != config.vocab_size:
            raise RuntimeError(f"reloaded vocabulary {again.config.vocab_size}, expected {config.vocab_size}")
        say(f"saved in {report['save_seconds']} s and reloaded in {report['load_seconds']} s: trained weights "
            f"identical, vocabulary {again.config.vocab_size:,}")
        del again
        report["peak_rss_gb"] = round(_peak_rss_gb(), 1)
        say(f"peak resident memory of this process: {report['peak_rss_gb']} GB")
    finally:
        if temp:
            shutil.rmtree(out, ignore_errors=True)
    return report


def loss_blocks(layout: MusicLayout) -> list[tuple[int, int]]:
    from midilm.train.lm_loss import loss_blocks as blocks

    return blocks(layout)


def block_loss(hidden, weight, labels, blocks):
    from midilm.train.lm_loss import block_loss as loss

    return loss(hidden, weight, labels, blocks)


def _trainer_class(layout: MusicLayout, use_block_loss: bool):
    """Deprecated alias kept for benchmarks/compare_init.py until it uses make_trainer: a T2MTrainer factory
    that wraps a bare LM with this layout's loss."""
    from functools import partial

    from midilm.train.lm_loss import T2MTrainer

    return partial(T2MTrainer, blocks=loss_blocks(layout) if use_block_loss else None)


_collate, _iterable = collate_rows, iterable_dataset  # deprecated aliases (benchmarks/compare_init.py)

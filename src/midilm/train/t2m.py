"""Two-stage training of a text-to-MIDI model (MIDI-LLM's recipe) with the Hugging Face Trainer.

Stage 1 (continued pretraining): a mix of music text (captions, questions and answers) and standalone
AMT training lines, loss on every token. Stage 2 (supervised fine-tuning): MIDI-LLM's prompt with a
caption, then the music; loss on the music only; caption dropout; transposition, tempo scaling and
instrument reassignment with the caption rewritten to match; AMT anticipation (an instrument or a span
given as controls) so accompaniment and infilling work. Sequences are packed to `max_len`.

The loss can be computed per slot block (`block_loss`): the next id of a music position is a time, a
duration or a note, and the constrained sampler only ever chooses inside that block, so the softmax
over the block alone trains the same decisions at a fraction of the output-layer cost.

Any accelerate launch (DDP, FSDP, DeepSpeed; configs in `configs/accelerate/`) runs this unchanged.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from midilm.codecs.amt import vocab as V
from midilm.codecs.amt.lines import anticipate, split_instruments, split_spans, training_lines
from midilm.models.vocab import MUSIC_ROWS, MusicLayout


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
    max_len: int = 1024
    stage1_steps: int = 200
    stage2_steps: int = 600
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    seed: int = 0
    caption_dropout: float = 0.1
    p_transpose: float = 0.5
    p_tempo: float = 0.3
    p_reassign: float = 0.25
    p_anticipate: float = 0.15
    block_loss: bool = True
    bf16: bool = False
    logging_steps: int = 10
    save_steps: int = 200
    resume: bool = False
    max_pieces: int | None = None
    extra: dict = field(default_factory=dict)


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Piece:
    events: list[int]
    analysis: dict
    captions: list[str]
    source: str


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
        try:
            events = encode_midi(row["path"])
        except MidilmError:
            continue
        analysis = {k: v for k, v in row.items() if k not in ("captions", "qa")}
        pieces.append(Piece(events, analysis, list(row.get("captions") or []), row.get("source", "")))
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
    w = t[start : start + n_fit].copy()
    w[:, 0] -= w[0, 0]
    w = w[w[:, 0] < V.MAX_TIME]
    return w.reshape(-1).tolist()


def make_caption(analysis: dict, rng: random.Random, fallback: list[str]) -> str:
    from midilm.annotate.captions import make_caption as caption_from_analysis

    try:
        return caption_from_analysis(analysis, rng, rng.choice(["short", "medium", "medium", "long"]))
    except Exception:  # an analysis the caption writer cannot use: keep a stored caption
        return rng.choice(fallback) if fallback else ""


def sft_example(piece: Piece, layout: MusicLayout, tokenizer, cfg: T2MConfig, rng: random.Random):
    """One stage-2 example: (ids, labels) with the prompt masked out of the loss."""
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
    changed = analysis is not piece.analysis and analysis != piece.analysis
    caption = None
    if rng.random() >= cfg.caption_dropout:
        caption = make_caption(analysis, rng, [] if changed else piece.captions)
    prompt = tokenizer(layout.prompt_text(caption), add_special_tokens=True)["input_ids"]
    flag = V.AUTOREGRESS
    music = _window(events, rng, cfg.max_len - len(prompt) - 1)
    if music and rng.random() < cfg.p_anticipate:
        from midilm.codecs.amt.lines import instruments_of

        instruments = instruments_of(music)
        if len(instruments) > 1:
            given = rng.sample(instruments, rng.randint(1, len(instruments) - 1))
            ev, controls = split_instruments(music, given)
        else:
            ev, controls = split_spans(music, 0.05, np.random.default_rng(rng.randrange(1 << 30)))
        music, _ = anticipate(ev, controls)
        music = music[: cfg.max_len - len(prompt) - 1]
        music = music[: len(music) - len(music) % 3]
        flag = V.ANTICIPATE
    ids = prompt + [layout.music_id(flag)] + [layout.music_id(t) for t in music]
    labels = [-100] * len(prompt) + ids[len(prompt) :]
    return ids, labels


def text_examples(pieces: list[Piece], rng: random.Random) -> list[str]:
    """Music text for stage 1: captions and question-answer pairs."""
    texts = []
    for p in pieces:
        texts += p.captions
        for qa in p.analysis.get("qa") or []:
            if isinstance(qa, dict) and qa.get("question"):
                texts.append(f"{qa['question']} {qa.get('answer', '')}")
    rng.shuffle(texts)
    return texts


class PackedStream:
    """An endless stream of packed rows {input_ids, labels} of length max_len from an example maker."""

    def __init__(self, make_example, max_len: int, pad_id: int, seed: int):
        self.make_example, self.max_len, self.pad_id, self.seed = make_example, max_len, pad_id, seed

    def __iter__(self):
        import torch

        worker = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed + (worker.id if worker else 0))
        ids: list[int] = []
        labels: list[int] = []
        while True:
            x, y = self.make_example(rng)
            ids += x
            labels += y
            while len(ids) >= self.max_len:
                yield {"input_ids": torch.tensor(ids[: self.max_len]), "labels": torch.tensor(labels[: self.max_len])}
                ids, labels = ids[self.max_len :], labels[self.max_len :]


def _iterable(stream: PackedStream):
    import torch

    class _DS(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(stream)

    return _DS()


# --- model -----------------------------------------------------------------------------------------


def build_model(cfg: T2MConfig, texts: list[str]):
    """A fresh small Llama with our BPE text vocabulary plus the AMT block, or an expanded local LM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from midilm.models.tokenizer import train_text_tokenizer
    from midilm.models.vocab import expand_vocabulary

    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        tokenizer = AutoTokenizer.from_pretrained(cfg.init_from, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, local_files_only=True, use_safetensors=True)
        layout = expand_vocabulary(model, len(tokenizer), init=cfg.init_scheme, seed=cfg.seed)
        return model, tokenizer, layout
    tokenizer = train_text_tokenizer(texts or ["music"], cfg.text_vocab)
    layout = MusicLayout(len(tokenizer))
    config = LlamaConfig(
        vocab_size=layout.vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=max(cfg.max_len, 2048), tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0,
    )
    return LlamaForCausalLM(config), tokenizer, layout


def loss_blocks(layout: MusicLayout) -> list[tuple[int, int]]:
    """[lo, hi) id ranges whose softmax is taken separately: text, then each AMT block."""
    o = layout.music_offset
    return [(0, o), (o + V.TIME_OFFSET, o + V.DUR_OFFSET), (o + V.DUR_OFFSET, o + V.NOTE_OFFSET),
            (o + V.NOTE_OFFSET, o + V.REST + 1), (o + V.ATIME_OFFSET, o + V.ADUR_OFFSET),
            (o + V.ADUR_OFFSET, o + V.ANOTE_OFFSET), (o + V.ANOTE_OFFSET, o + V.SPECIAL_OFFSET),
            (o + V.SPECIAL_OFFSET, o + MUSIC_ROWS)]


def block_loss(hidden, weight, labels, blocks):
    """Mean cross-entropy where each target competes only with the ids of its own block."""
    import torch
    import torch.nn.functional as F

    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = y != -100
    h, y = h[keep], y[keep]
    total = h.new_zeros((), dtype=torch.float32)
    for lo, hi in blocks:
        m = (y >= lo) & (y < hi)
        if m.any():
            logits = h[m] @ weight[lo:hi].T
            total = total + F.cross_entropy(logits.float(), y[m] - lo, reduction="sum")
    return total / max(int(keep.sum()), 1)


def _trainer_class(layout: MusicLayout, use_block_loss: bool):
    from transformers import Trainer

    blocks = loss_blocks(layout)

    class T2MTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not use_block_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inner = model.module if hasattr(model, "module") else model
            out = inner.get_decoder()(input_ids=inputs["input_ids"])
            loss = block_loss(out.last_hidden_state, inner.get_output_embeddings().weight, inputs["labels"], blocks)
            return (loss, out) if return_outputs else loss

    return T2MTrainer


def _collate(rows):
    import torch

    return {key: torch.stack([r[key] for r in rows]) for key in ("input_ids", "labels")}


def run_stage(model, stream: PackedStream, cfg: T2MConfig, layout: MusicLayout, out_dir: Path, steps: int,
              name: str) -> list[dict]:
    import torch
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(out_dir / f"checkpoints-{name}"), max_steps=steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, warmup_steps=int(cfg.warmup_ratio * steps),
        lr_scheduler_type="cosine", weight_decay=cfg.weight_decay, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=2, bf16=cfg.bf16, report_to=[],
        seed=cfg.seed, dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False,
        dataloader_pin_memory=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
    )
    trainer = _trainer_class(layout, cfg.block_loss)(model=model, args=args, train_dataset=_iterable(stream),
                                                      data_collator=_collate)
    resume = cfg.resume and any((out_dir / f"checkpoints-{name}").glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    return [dict(h, stage=name) for h in trainer.state.log_history]


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


def train_t2m(cfg: T2MConfig) -> Path:
    """Run both stages and save a loadable model directory at `cfg.output`."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    pieces = load_pieces(cfg.data, "train", cfg.max_pieces)
    if not pieces:
        raise ValueError(f"no training pieces in {cfg.data}")
    texts = text_examples(pieces, rng)
    model, tokenizer, layout = build_model(cfg, texts)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    history: list[dict] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    if cfg.stage1_steps:
        lines = [[layout.music_id(t) for t in line] for line in training_lines(p.events for p in pieces)]

        def stage1_example(r: random.Random):
            if lines and r.random() < 0.6:
                line = r.choice(lines)[: cfg.max_len]
                return line, list(line)
            ids = tokenizer(r.choice(texts) if texts else "music", add_special_tokens=True)["input_ids"]
            ids = ids + [tokenizer.eos_token_id]
            return ids, list(ids)

        history += run_stage(model, PackedStream(stage1_example, cfg.max_len, pad, cfg.seed), cfg, layout, out,
                             cfg.stage1_steps, "stage1")
    if cfg.stage2_steps:
        history += run_stage(
            model, PackedStream(lambda r: sft_example(r.choice(pieces), layout, tokenizer, cfg, r), cfg.max_len, pad,
                                cfg.seed + 1), cfg, layout, out, cfg.stage2_steps, "stage2")

    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    layout.save(out)
    (out / "loss_history.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_losses(history, out / "loss.png")
    return out


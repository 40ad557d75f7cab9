"""Convert an original MusicBERT fairseq checkpoint (microsoft/muzic) to our HF-layout MusicBERT, safely.

Loading without unpickling code: fairseq checkpoints are `torch.save` pickles whose non-tensor parts
(`args`, an argparse.Namespace; `cfg`, an omegaconf DictConfig; numpy state in `extra_state`) name
classes that `torch.load(..., weights_only=True)` refuses. We list every global the pickle names that
torch's weights-only loader does not allow (`torch.serialization.get_unsafe_globals_in_checkpoint`,
which reads the pickle's opcodes without running them) and map each name to an inert stand-in class
(`InertObject`) for this one load. A stand-in only records the arguments and state it is given; the
named class is never imported and none of its code runs (an `os.system` named in the file becomes a
stand-in too). Tensors are rebuilt by torch's own weights-only loader, so `weights_only=True` stays on.

Key mapping (fairseq -> ours), with `decoder.` accepted for `encoder.` as old RoBERTa checkpoints have:
  encoder.sentence_encoder.embed_tokens / embed_positions / downsampling.0 -> musicbert.*
  encoder.sentence_encoder.emb_layer_norm (or layernorm_embedding)        -> musicbert.emb_layer_norm
  encoder.sentence_encoder.layers.N.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2,
      final_layer_norm}                                                    -> musicbert.layers.N.*
  encoder.sentence_encoder.upsampling.0                                    -> lm_head.upsampling
  encoder.lm_head.{dense, layer_norm, bias}                                -> lm_head.*
  encoder.lm_head.weight must equal embed_tokens (RoBERTa ties them); classification heads are dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from midilm.codecs import octuple as oc

LAYER_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
               "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
_DROPPED = re.compile(r"(^classification_heads\.|\.version$|_float_tensor$)")


class InertObject:
    """Stands in for a class named in a checkpoint: keeps its arguments and state, runs nothing."""

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name}>"


def _stand_in(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (InertObject,), {"qualified_name": name, "__module__": __name__})


def load_checkpoint(path: str | Path) -> dict:
    """A fairseq checkpoint's contents with weights_only=True; foreign objects come back as InertObject."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:
        raise ValueError(f"{path}: not a torch zip checkpoint ({e}); re-save it with a recent torch") from None
    stand_ins = [(_stand_in(name), name) for name in unsafe]
    with torch.serialization.safe_globals(stand_ins):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(e).__name__)
            raise ValueError(f"{path}: cannot read the checkpoint safely: {reason}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a fairseq checkpoint (a dict), got {type(data).__name__}")
    return data


def _find(obj, key: str, depth: int = 0):
    """First value stored under `key` in nested dicts, lists and stand-ins (argparse / omegaconf state)."""
    if depth > 12:
        return None
    if isinstance(obj, InertObject):
        if isinstance(obj.state, dict) and "_val" in obj.state and key == "_val":
            return obj.state["_val"]
        return _find(obj.state, key, depth + 1)
    if isinstance(obj, dict):
        if key in obj:
            value = obj[key]
            if isinstance(value, InertObject) and isinstance(value.state, dict) and "_val" in value.state:
                value = value.state["_val"]  # an omegaconf value node
            return value
        for value in obj.values():
            found = _find(value, key, depth + 1)
            if found is not None:
                return found
    if isinstance(obj, (list, tuple)):
        for value in obj:
            found = _find(value, key, depth + 1)
            if found is not None:
                return found
    return None


def map_state_dict(fairseq_state: dict) -> tuple[dict, list[str]]:
    """Our state dict from fairseq's model state, and the fairseq keys dropped on purpose."""
    state = {}
    for key, value in fairseq_state.items():
        if key.startswith("decoder."):
            key = "encoder." + key[len("decoder."):]
        state[key] = value
    out, dropped, unknown = {}, [], []
    se = "encoder.sentence_encoder."
    for key, value in state.items():
        if _DROPPED.search(key):
            dropped.append(key)
            continue
        ours = None
        if key.startswith(se):
            rest = key[len(se):]
            for src, dst in (("embed_tokens.", "musicbert.embed_tokens."),
                             ("embed_positions.", "musicbert.embed_positions."),
                             ("downsampling.0.", "musicbert.downsampling."),
                             ("upsampling.0.", "lm_head.upsampling."),
                             ("emb_layer_norm.", "musicbert.emb_layer_norm."),
                             ("layernorm_embedding.", "musicbert.emb_layer_norm.")):
                if rest.startswith(src):
                    ours = dst + rest[len(src):]
            m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", rest)
            if m and m.group(2) in LAYER_PARTS:
                ours = f"musicbert.layers.{m.group(1)}.{m.group(2)}.{m.group(3)}"
        elif key.startswith("encoder.lm_head."):
            rest = key[len("encoder.lm_head."):]
            if rest == "weight":
                dropped.append(key)  # tied to embed_tokens: checked below
                continue
            if rest == "bias" or re.fullmatch(r"(dense|layer_norm)\.(weight|bias)", rest):
                ours = "lm_head." + rest
        if ours is None:
            unknown.append(key)
        else:
            out[ours] = value
    if unknown:
        raise ValueError(f"unexpected keys in the checkpoint (not a MusicBERT model?): {', '.join(unknown[:8])}")
    lm_weight = state.get("encoder.lm_head.weight")
    emb = out.get("musicbert.embed_tokens.weight")
    if lm_weight is not None and emb is not None and (lm_weight.shape != emb.shape or not torch.equal(lm_weight, emb)):
        raise ValueError("the checkpoint's LM head is not tied to its embeddings (untie_weights_roberta); "
                         "this converter supports the tied MusicBERT models only")
    return out, dropped


def config_from_checkpoint(data: dict, state: dict):
    """Our config from the mapped tensors' shapes, with heads and dropouts from the checkpoint's args."""
    from midilm.models.encoder import MusicBertConfig

    try:
        vocab, hidden = state["musicbert.embed_tokens.weight"].shape
        positions = state["musicbert.embed_positions.weight"].shape[0]
        ffn = state["musicbert.layers.0.fc1.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"the checkpoint lacks {e.args[0]} (not a MusicBERT model?)") from None
    if vocab != oc.VOCAB_SIZE:
        raise ValueError(f"the checkpoint's dictionary has {vocab} entries, OctupleMIDI's has {oc.VOCAB_SIZE}: "
                         "not a MusicBERT OctupleMIDI model")
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("musicbert.layers."))
    meta = {k: data.get(k) for k in ("args", "cfg")}
    heads = _find(meta, "encoder_attention_heads") or max(hidden // 64, 1)
    extra = {}
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        value = _find(meta, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            extra[name] = float(value)
    activation = _find(meta, "activation_fn")
    if activation not in (None, "gelu"):
        raise ValueError(f"the checkpoint uses activation {activation!r}; MusicBERT (and this model) use gelu")
    max_notes = positions - oc.PAD - 1 - 2
    return MusicBertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=int(heads), intermediate_size=ffn, max_notes=max_notes, **extra)


def convert_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    """Read a MusicBERT fairseq checkpoint and write our MusicBertForMaskedLM folder (safetensors)."""
    from midilm.models.encoder import MusicBertForMaskedLM

    data = load_checkpoint(checkpoint)
    model_state = data.get("model")
    if not isinstance(model_state, dict):
        raise ValueError(f"{checkpoint}: no 'model' state dict in the checkpoint")
    state, dropped = map_state_dict(model_state)
    config = config_from_checkpoint(data, state)
    model = MusicBertForMaskedLM(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} tensors of the model: {', '.join(missing[:6])}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} "
                             "expected")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    (out / "conversion.json").write_text(json.dumps({
        "source": Path(checkpoint).name, "sha256": digest.hexdigest(), "dropped_keys": dropped,
        "parameters": sum(p.numel() for p in model.parameters()),
    }, indent=2) + "\n")
    return out

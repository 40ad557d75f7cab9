"""Convert a local Llama checkpoint (text + AMT vocabulary) to a GGUF file that llama.cpp loads, and cache it.

Written with the `gguf` package from the weights as transformers loads them (8-bit and bf16 weights are
widened first): llama architecture metadata, the tensors under llama.cpp's names (query and key rows
reordered for its rotary layout), and just enough tokenizer metadata for llama.cpp to load the file.
llama.cpp never tokenizes for us: prompts are tokenized in Python with the HF tokenizer and fed as ids,
so the music rows are plain control tokens named `<|amt_N|>`.

Two heads: "full" keeps every vocabulary row; "events" keeps only the text and AMT event rows (ids below
`music_offset + CONTROL_OFFSET`), halving the output layer that llama.cpp runs for every token. The
constrained sampler only ever draws event ids (AMT controls, the anticipated notes of accompaniment and
infilling, are forced, never drawn), so its logits are the same; the decoder feeds a control id as its
input-embedding row instead (`input_embeddings`), and the file records the full size under
`midilm.full_vocab_size`. Unconstrained sampling (any music id) needs the full head.

The cache lives in `$MIDILM_CACHE`, else `$XDG_CACHE_HOME/midilm`, else `~/.cache/midilm`, under `gguf/`,
keyed by a hash of the model's files and the conversion type, so a changed model converts again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

GGUF_TYPES = ("f32", "f16", "q8_0")
GGUF_HEADS = ("full", "events")
FULL_VOCAB_KEY = "midilm.full_vocab_size"
CONVERTER_VERSION = "1"  # part of the cache key: bump when the written file changes
_HASHED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "midilm.json")


def cache_dir() -> Path:
    if os.environ.get("MIDILM_CACHE"):
        return Path(os.environ["MIDILM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midilm"


def model_hash(model_dir: str | Path) -> str:
    """SHA-256 over the files that define the model (weights, config, tokenizer, music layout)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256(CONVERTER_VERSION.encode())
    names = sorted(p.name for p in model_dir.glob("*.safetensors")) + [n for n in _HASHED_FILES
                                                                       if (model_dir / n).exists()]
    for name in names:
        h.update(name.encode())
        with open(model_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cached_gguf(model_dir: str | Path, gguf_type: str = "f32", directory: str | Path | None = None,
                head: str = "full") -> Path:
    """The GGUF of a model in the cache, converted on first use."""
    model_dir = Path(model_dir)
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    if head not in GGUF_HEADS:
        raise ValueError(f"GGUF head must be one of {', '.join(GGUF_HEADS)}, got {head!r}")
    target = Path(directory) if directory else cache_dir() / "gguf"
    suffix = "" if head == "full" else f"-{head}"
    path = target / f"{model_dir.name}-{model_hash(model_dir)[:16]}-{gguf_type}{suffix}.gguf"
    if not path.exists():
        export_gguf(model_dir, path, gguf_type, head)
    return path


def events_rows(model_dir: str | Path, vocab_size: int) -> int | None:
    """Rows an "events" head keeps (text + AMT events), or None for a model without a music vocabulary."""
    from midilm.codecs.amt.vocab import CONTROL_OFFSET
    from midilm.models.vocab import layout_for, tokenizer_length

    try:
        return layout_for(model_dir, vocab_size, tokenizer_length(model_dir)).music_offset + CONTROL_OFFSET
    except ValueError:
        return None


def input_embeddings(model_dir: str | Path) -> np.ndarray:
    """The input embedding matrix [vocab, hidden] as float32, read from the safetensors files alone."""
    from safetensors import safe_open

    name = "model.embed_tokens.weight"
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:  # torch reads bf16, which numpy cannot
            names = set(st.keys())
            if name in names:
                return st.get_tensor(name).float().numpy()
    raise ValueError(f"{model_dir}: no {name} in its safetensors files")


def export_gguf(model_dir: str | Path, out: str | Path, gguf_type: str = "f32", head: str = "full") -> Path:
    """Write `model_dir` (a LlamaForCausalLM saved with save_pretrained) as a GGUF file at `out`; `head`
    "events" keeps only the text and AMT event rows (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir, out = Path(model_dir), Path(out)
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    if not any(model_dir.glob("*.safetensors")):
        raise ValueError(f"{model_dir} has no .safetensors weights (other formats are refused: they can run code)")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if config.model_type != "llama":
        raise ValueError(f"only Llama models convert to GGUF here; {model_dir} is {config.model_type!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ValueError("Llama models with attention or MLP biases are not supported by this converter")
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, use_safetensors=True,
                                                 dtype=torch.float32)
    if head not in GGUF_HEADS:
        raise ValueError(f"GGUF head must be one of {', '.join(GGUF_HEADS)}, got {head!r}")
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    rows = None
    if head == "events":
        rows = events_rows(model_dir, int(config.vocab_size))
        if rows is None:
            raise ValueError(f"{model_dir} has no music vocabulary: only the full head applies")
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in weights:
                weights[name] = weights[name][:rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    # written next to the target and renamed, so a failed or concurrent conversion never leaves half a file
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".part", dir=out.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the GGUF gets a normal file's mode
    try:
        _write(Path(tmp), model_dir, config, weights, tied, gguf_type, rows)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _rope(config) -> tuple[float, dict]:
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    return theta, params


def llama3_rope_factors(head_dim: int, theta: float, params: dict) -> np.ndarray:
    """Per-frequency divisors of Llama 3's rope scaling (what llama.cpp reads from `rope_freqs.weight`)."""
    factor = float(params["factor"])
    low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
    old_len = float(params.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_len / high:  # high frequencies are kept
            out.append(1.0)
        elif wavelen > old_len / low:  # low frequencies are slowed by the full factor
            out.append(factor)
        else:  # in between, a smooth blend
            smooth = (old_len / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _unrotate(w: np.ndarray, heads: int) -> np.ndarray:
    """HF stores each head's rotary pairs as two halves; llama.cpp's llama graph wants them interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_vocab(model_dir: Path, vocab_size: int, music_offset: int) -> tuple[list[str], list[int], list[str]]:
    """Token strings, token types and merges for every row; rows past the text vocabulary name AMT ids."""
    import gguf

    data = json.loads((model_dir / "tokenizer.json").read_text())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"only byte-level BPE tokenizers are supported, got {model.get('type')!r}")
    by_id = {int(i): tok for tok, i in model.get("vocab", {}).items()}
    special = {int(t["id"]) for t in data.get("added_tokens", []) if t.get("special")}
    by_id.update({int(t["id"]): t["content"] for t in data.get("added_tokens", [])})
    tokens, types = [], []
    for i in range(vocab_size):
        if i >= music_offset:
            tokens.append(f"<|amt_{i - music_offset}|>")
            types.append(gguf.TokenType.CONTROL)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
        else:
            tokens.append(f"<|unused_{i}|>")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def _write(path: Path, model_dir: Path, config, weights: dict[str, np.ndarray], tied: bool, gguf_type: str,
           rows: int | None = None) -> None:
    import gguf

    from midilm.models.vocab import layout_for, tokenizer_length

    full_size = int(config.vocab_size)
    vocab_size = rows or full_size
    heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    theta, rope = _rope(config)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(model_dir.name)
    w.add_context_length(int(config.max_position_embeddings))
    w.add_embedding_length(int(config.hidden_size))
    w.add_block_count(int(config.num_hidden_layers))
    w.add_feed_forward_length(int(config.intermediate_size))
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_vocab_size(vocab_size)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type])
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type not in ("default", "llama3"):
        raise ValueError(f"rope scaling {rope_type!r} is not supported by this converter")

    if rows:
        w.add_uint32(FULL_VOCAB_KEY, full_size)
    try:
        music_offset = layout_for(model_dir, full_size, tokenizer_length(model_dir)).music_offset
    except ValueError:  # a plain text model (a base to expand later): no music rows
        music_offset = vocab_size
    tokens, types, merges = _tokenizer_vocab(model_dir, vocab_size, music_offset)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("pad_token_id", w.add_pad_token_id)):
        value = getattr(config, key, None)
        if isinstance(value, int) and 0 <= value < vocab_size:
            add(value)
    w.add_add_bos_token(False)  # prompts arrive as ids that already hold their BOS

    def put(name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 1 or gguf_type == "f32":
            w.add_tensor(name, arr)
        elif gguf_type == "q8_0" and arr.shape[-1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr.astype(np.float16))

    put("token_embd.weight", weights["model.embed_tokens.weight"])
    put("output_norm.weight", weights["model.norm.weight"])
    if not tied:
        put("output.weight", weights["lm_head.weight"])
    if rope_type == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(head_dim, theta, rope))
    for i in range(int(config.num_hidden_layers)):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", weights[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", _unrotate(weights[p + "self_attn.q_proj.weight"], heads))
        put(f"blk.{i}.attn_k.weight", _unrotate(weights[p + "self_attn.k_proj.weight"], kv_heads))
        put(f"blk.{i}.attn_v.weight", weights[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", weights[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", weights[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", weights[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", weights[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", weights[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def output_matrix(gguf_path: str | Path) -> np.ndarray:
    """The output layer's weights [vocab, hidden] as float32 (the tied embedding when there is no `output`)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    tensors = {t.name: t for t in reader.tensors}
    t = tensors.get("output.weight") or tensors["token_embd.weight"]
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    rows, cols = int(t.shape[1]), int(t.shape[0])  # GGUF lists dimensions innermost first
    return np.ascontiguousarray(np.asarray(data, dtype=np.float32).reshape(rows, cols))

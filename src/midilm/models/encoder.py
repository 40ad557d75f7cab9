"""MusicBERT, the OctupleMIDI encoder, in plain PyTorch behind the Hugging Face model API, and note pooling.

Architecture as microsoft/muzic `musicbert/__init__.py` (OctupleEncoder on fairseq's RoBERTa encoder):
one embedding table over the whole OctupleMIDI dictionary; a note's 8 field embeddings are concatenated
(8 * H) and projected to H ("downsampling"); learned positions over note slots with fairseq's offset
(slot i of a sequence sits at row pad_id + 1 + i, padding at row pad_id); a LayerNorm on the embeddings,
then post-LN transformer layers with GELU. The masked-LM head projects each note's state back to 8 * H
("upsampling"), so every field token gets an H vector, and applies RoBERTa's LM head (dense, GELU,
LayerNorm, output weights tied to the embedding table, bias) over the whole dictionary.

Parameter names follow fairseq's where they can, so `musicbert_convert` maps a checkpoint key by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from midilm.codecs import octuple as oc

FIELDS_PER_NOTE = 8


class MusicBertConfig(PretrainedConfig):
    """Sizes of a MusicBERT encoder. `max_notes` counts real notes; two more slots hold <s> and </s>."""

    model_type = "midilm-musicbert"

    def __init__(
        self,
        vocab_size: int = oc.VOCAB_SIZE,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        max_notes: int = oc.WINDOW,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        pad_token_id: int = oc.PAD,
        bos_token_id: int = oc.BOS,
        eos_token_id: int = oc.EOS,
        mask_token_id: int = oc.MASK,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_notes = max_notes
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the {num_attention_heads} heads")

    @property
    def max_slots(self) -> int:
        """Note slots a sequence may have: the notes plus <s> and </s>."""
        return self.max_notes + 2

    @property
    def position_rows(self) -> int:
        # fairseq's LearnedPositionalEmbedding: positions start after the padding row
        return self.max_slots + self.pad_token_id + 1

    @classmethod
    def tiny(cls, **kwargs) -> MusicBertConfig:
        return cls(**{"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                      "intermediate_size": 1024, **kwargs})

    @classmethod
    def small(cls, **kwargs) -> MusicBertConfig:
        """musicbert_small of the muzic repository."""
        return cls(**{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
                      "intermediate_size": 2048, **kwargs})

    @classmethod
    def base(cls, **kwargs) -> MusicBertConfig:
        """musicbert_base of the muzic repository."""
        return cls(**{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "intermediate_size": 3072, **kwargs})

    @classmethod
    def preset(cls, name: str, **kwargs) -> MusicBertConfig:
        if name not in ("tiny", "small", "base"):
            raise ValueError(f"unknown MusicBERT preset {name!r} (tiny, small or base)")
        return getattr(cls, name)(**kwargs)


# --- layers ----------------------------------------------------------------------------------------


class _SelfAttention(nn.Module):
    def __init__(self, config: MusicBertConfig):
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj, self.k_proj = nn.Linear(h, h), nn.Linear(h, h)
        self.v_proj, self.out_proj = nn.Linear(h, h), nn.Linear(h, h)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        split = lambda t: t.view(b, n, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
            attn_mask=keep[:, None, None, :], dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h))


class _Layer(nn.Module):
    """fairseq's TransformerSentenceEncoderLayer: post-LN, GELU."""

    def __init__(self, config: MusicBertConfig):
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn = _SelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(h, eps=eps)
        self.fc1 = nn.Linear(h, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, h)
        self.final_layer_norm = nn.LayerNorm(h, eps=eps)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = F.dropout(self.self_attn(x, keep), self.dropout, self.training)
        x = self.self_attn_layer_norm(x + y)
        y = F.dropout(F.gelu(self.fc1(x)), self.activation_dropout, self.training)
        y = F.dropout(self.fc2(y), self.dropout, self.training)
        return self.final_layer_norm(x + y)


class MusicBertPreTrainedModel(PreTrainedModel):
    config_class = MusicBertConfig
    base_model_prefix = "musicbert"
    _no_split_modules = ["_Layer"]

    def _init_weights(self, module: nn.Module) -> None:
        # fairseq's init_bert_params
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _LMHead):
            nn.init.zeros_(module.bias)


def note_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    """Bool [B, N]: which note slots are real. `attention_mask` may be per token ([B, 8N]) or per slot."""
    if input_ids.dim() != 2 or input_ids.shape[1] % FIELDS_PER_NOTE:
        raise ValueError(f"input_ids must be [batch, 8 * slots], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return input_ids[:, ::FIELDS_PER_NOTE].ne(pad_id)
    if attention_mask.shape[1] == input_ids.shape[1]:
        attention_mask = attention_mask[:, ::FIELDS_PER_NOTE]
    return attention_mask.bool()


class MusicBertModel(MusicBertPreTrainedModel):
    """The encoder: `last_hidden_state` [B, N, H] for N note slots (<s>, the notes, </s>, padding)."""

    # a masked-LM folder loads as the bare encoder without complaint
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: MusicBertConfig):
        super().__init__(config)
        h = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.downsampling = nn.Linear(FIELDS_PER_NOTE * h, h)
        self.embed_positions = nn.Embedding(config.position_rows, h, padding_idx=config.pad_token_id)
        self.emb_layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> BaseModelOutput:
        keep = note_mask(input_ids, attention_mask, self.config.pad_token_id)
        b, n = keep.shape
        if n > self.config.max_slots:
            raise ValueError(f"{n - 2} notes exceed the encoder's {self.config.max_notes} (cut into windows)")
        x = self.downsampling(self.embed_tokens(input_ids).view(b, n, -1))
        positions = torch.cumsum(keep, dim=1) * keep + self.config.pad_token_id
        x = self.emb_layer_norm(x + self.embed_positions(positions))
        x = F.dropout(x, self.config.dropout, self.training) * keep.unsqueeze(-1).to(x.dtype)
        states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, keep)
            if states is not None:
                states.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if states else None)


class _LMHead(nn.Module):
    """Back to 8 field vectors per note, then RoBERTa's LM head with the embedding table as output weights."""

    def __init__(self, config: MusicBertConfig):
        super().__init__()
        h = config.hidden_size
        self.upsampling = nn.Linear(h, FIELDS_PER_NOTE * h)
        self.dense = nn.Linear(h, h)
        self.layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def field_states(self, hidden: torch.Tensor) -> torch.Tensor:
        b, n, h = hidden.shape
        return self.upsampling(hidden).view(b, n * FIELDS_PER_NOTE, h)

    def logits(self, states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(states))), weight) + self.bias


@dataclass
class MusicBertMaskedLMOutput(ModelOutput):
    """`logits` are [B, 8N, V]; when labels are given, only the labelled tokens' rows [M, V] (as fairseq)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class MusicBertForMaskedLM(MusicBertPreTrainedModel):
    """MusicBERT with its masked-LM head; labels are token ids per input token, -100 where not predicted."""

    accepts_loss_kwargs = False  # the loss is a mean over the predicted tokens; the Trainer scales it

    def __init__(self, config: MusicBertConfig):
        super().__init__(config)
        self.musicbert = MusicBertModel(config)
        self.lm_head = _LMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MusicBertMaskedLMOutput:
        hidden = self.musicbert(input_ids, attention_mask=attention_mask).last_hidden_state
        states = self.lm_head.field_states(hidden)
        weight = self.musicbert.embed_tokens.weight
        if labels is None:
            return MusicBertMaskedLMOutput(logits=self.lm_head.logits(states, weight), last_hidden_state=hidden)
        # only the predicted tokens go through the output layer: most of the cost saved
        chosen = labels.ne(-100)
        logits = self.lm_head.logits(states[chosen], weight)
        target = labels[chosen]
        loss = F.cross_entropy(logits.float(), target) if len(target) else logits.sum() * 0.0
        return MusicBertMaskedLMOutput(loss=loss, logits=logits, last_hidden_state=hidden)


# --- pooling ---------------------------------------------------------------------------------------


def note_window(notes: np.ndarray, max_notes: int) -> np.ndarray:
    """The first `max_notes` notes with bars counted from the window's first bar, cut before bar 256."""
    w = np.asarray(notes, dtype=np.int64).reshape(-1, FIELDS_PER_NOTE)[:max_notes].copy()
    if len(w):
        w[:, 0] -= w[0, 0]
        w = w[w[:, 0] < oc.BAR_MAX]
    return w


def _as_notes(item) -> np.ndarray:
    from midilm.music.midi_io import read_midi
    from midilm.music.piece import Piece

    if isinstance(item, (str, Path)):
        item = read_midi(item)
    if isinstance(item, Piece):
        return oc.encode_piece(item)
    arr = np.asarray(item)
    if arr.ndim != 2 or arr.shape[1] != FIELDS_PER_NOTE:
        raise ValueError(f"expected a Piece, a MIDI path or an [notes, 8] OctupleMIDI array, got shape {arr.shape}")
    return arr.astype(np.int64)


def chunk_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """K equal consecutive chunks of n notes; with fewer notes than chunks, chunks repeat a note."""
    if n >= k:
        return [(i * n // k, (i + 1) * n // k) for i in range(k)]
    return [(i * n // k, i * n // k + 1) for i in range(k)]


def pool_states(hidden: torch.Tensor, lengths: Sequence[int], pool: str = "mean", k: int = 1) -> torch.Tensor:
    """Pool [B, N, H] states of sequences with `lengths` real notes each (slot 0 is <s>) to [B, k, H]."""
    out = []
    for row, n in zip(hidden, lengths):
        if pool == "bos":
            out.append(row[0].expand(k, -1))
            continue
        notes = row[1 : 1 + n]
        out.append(torch.stack([notes[a:b].mean(0) if pool == "mean" else notes[a:b].amax(0)
                                for a, b in chunk_bounds(n, k)]))
    return torch.stack(out)


@torch.no_grad()
def embed_pieces(
    model: MusicBertModel | MusicBertForMaskedLM,
    pieces_or_note_arrays: Iterable,
    pool: str = "mean",
    k: int = 1,
    batch_size: int = 16,
    max_notes: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Vectors of pieces: [n, H] for k = 1, else [n, k, H] (means of k equal consecutive note chunks).

    Items are Pieces, MIDI paths or [notes, 8] OctupleMIDI field arrays. Each is cut to its first
    `max_notes` notes (default: the model's maximum, at most 1,000 as MusicBERT's windows). `pool` is
    "mean" (masked mean over the notes, without <s>, </s> and padding), "max", or "bos" (the <s> state).
    """
    if pool not in ("mean", "max", "bos"):
        raise ValueError(f"unknown pool {pool!r} (mean, max or bos)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    encoder = model.musicbert if isinstance(model, MusicBertForMaskedLM) else model
    # converted checkpoints may hold more positions than their 1,000-note training windows used
    limit = min(oc.WINDOW if max_notes is None else max_notes, encoder.config.max_notes)
    windows = []
    for i, item in enumerate(pieces_or_note_arrays):
        w = note_window(_as_notes(item), limit)
        if not len(w):
            raise ValueError(f"item {i} has no notes to embed")
        windows.append(w)
    if not windows:
        return np.zeros((0, encoder.config.hidden_size) if k == 1 else (0, k, encoder.config.hidden_size), np.float32)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # similar lengths share a batch
    result = np.zeros((len(windows), k, encoder.config.hidden_size), dtype=np.float32)
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="embedding", unit="batch")
    try:
        for idx in batches:
            ids = batch_ids([windows[i] for i in idx], encoder.config.pad_token_id).to(device)
            hidden = encoder(ids).last_hidden_state
            pooled = pool_states(hidden.float(), [len(windows[i]) for i in idx], pool, k)
            result[idx] = pooled.cpu().numpy()
    finally:
        encoder.train(was_training)
    return result[:, 0] if k == 1 else result


def batch_ids(windows: Sequence[np.ndarray], pad_id: int = oc.PAD) -> torch.Tensor:
    """Right-padded [B, 8 * slots] ids of note windows (each as `octuple.sequence_ids`)."""
    seqs = [oc.sequence_ids(w) for w in windows]
    width = max(len(s) for s in seqs)
    out = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, s in zip(out, seqs):
        row[: len(s)] = s
    return torch.from_numpy(out)


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> MusicBertModel:
    """The bare encoder (eval mode) from a folder saved by MusicBertModel or MusicBertForMaskedLM."""
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a MusicBERT model folder (no config.json)")
    return MusicBertModel.from_pretrained(path).to(device).eval()


def _register_auto() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    AutoConfig.register(MusicBertConfig.model_type, MusicBertConfig, exist_ok=True)
    AutoModel.register(MusicBertConfig, MusicBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(MusicBertConfig, MusicBertForMaskedLM, exist_ok=True)


_register_auto()

"""MIDI-LLaMA: a frozen MusicBERT encoder, a projector and a causal LM (LoRA), saved as one directory.

The music is OctupleMIDI-encoded, cut into encoder windows (up to `max_windows` windows of the encoder's
maximum length, spread evenly over a long piece), encoded by the frozen MusicBERT, and mean-pooled over
its notes (masked: no <s>, </s> or padding) into one clip vector, or into K vectors for K consecutive
equal note chunks. The pooled states are the last layer's (the paper) or any chosen layers', concatenated
(`pool_layers`; 0 is the embedding layer), or, with `pool_fields`, the encoder's eight field embeddings
of each note side by side (8 x H, before its down-projection mixes them): a bag of embedded OctupleMIDI
tokens, for an encoder whose contextual layers carry less than its embedding table (see docs/understand.md).
The projector (one linear layer as in the paper, or a 2-layer MLP) maps each vector to the LLM width; the
K vectors are placed as prefix embeddings in the prompt of `midilm.models.conversation` (before the
instruction's text; an instruct LLM's own chat template when its tokenizer has one) and fed to any HF
causal LM as `inputs_embeds`.

Directory layout (safetensors only), in the peft convention: what training changed is saved, the frozen
base LLM is referenced by its name or local path, never copied:
    midilm.json               kind "midi-llama" (models/manifest.py), the projector/pooling config,
                              `base_llm` (the causal LM's name or path) and `encoder` ("encoder" when saved
                              here, else the frozen MusicBERT's path)
    projector.safetensors     projector weights and the feature standardisation
    adapter/                  LoRA adapter (peft layout; its adapter_config.json names the base too), from stage 2
    tokenizer/                the LLM's tokenizer (with its pad token and chat template)
    encoder/                  MusicBERT (HF layout), when it was trained or has no directory to point to
`self_contained=True` also writes `llm/` (the base LM, full weights) and `encoder/`, for a model that is
shipped or moved; directories with `llm/` (the shipped midilm-understand-tiny) load as before.

The key pathway (`key_pathway`, beyond the paper): a transposition-equivariant log-linear key classifier reads
tonic-relative pitch-class evidence of the notes (`key_evidence`: sounding time, onsets, bass, on-beat notes,
the opening and the close) and its 24-way distribution mixes 24 learned key embeddings (initialised from the
LLM's own embeddings of the key names) into one more prefix embedding after the music's. Its weights are in
projector.safetensors under `key_pathway.`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from midilm.annotate.captions import FACT_CAPTION_INSTRUMENTS, article, cap, indefinite_article, join_list, spelled_key
from midilm.annotate.questions import TONICS, normalise_key
from midilm.models.conversation import IGNORE, Encoded
from midilm.models.manifest import MANIFEST, read_manifest, write_manifest
from midilm.models.name_guide import ListGuide, NameGuide, NamePath, question_kind, single_tokens, token_ids
from midilm.music.gm import PLAIN_NAMES, plain_name

KIND = "midi-llama"
CONFIG_NAME = MANIFEST
PROJECTOR_NAME = "projector.safetensors"
KEY_PREFIX = "key_pathway."  # the key pathway's tensors in projector.safetensors
GENRE_PREFIX = "genre_pathway."  # and the genre pathway's
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str | None, device: str | None) -> torch.dtype:
    """A dtype name as torch's; None: bf16 on a GPU that has it, else fp32 (the CPU's fast path)."""
    if dtype is None:
        cuda = str(device or "cpu").startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@dataclass
class MidiLlamaConfig:
    encoder_hidden: int
    llm_hidden: int
    k: int = 1  # pooled vectors, each one prefix embedding
    projector: str = "linear"  # "linear" (the paper) or "mlp" (Linear-GELU-Linear)
    max_windows: int = 4  # encoder windows pooled for a long piece
    pool_layers: list[int] = field(default_factory=lambda: [-1])  # encoder states pooled (0 = embedding layer)
    pool_fields: bool = False  # pool the 8 field embeddings (8 x H) instead of hidden states
    window_notes: int | None = None  # notes per window; None = the encoder's maximum
    # append the notes' duration-weighted pitch-class profile (12 values) to every pooled vector: a feature
    # of the MIDI read beside the encoder (beyond the paper; `encoder_hidden` then counts these 12 too)
    pitch_classes: bool = False
    # one more prefix embedding: the key classifier's distribution over the 24 keys mixing 24 learned key
    # embeddings (KeyPathway; beyond the paper)
    key_pathway: bool = False
    # key-guided decoding (with `key_pathway`; 0: off): where the LM is about to name a key or a mode (after
    # "in", "is", "a" or at the answer's start, and it puts at least `key_guide_gate` of its probability on
    # key-name tokens), those tokens' share is redistributed in proportion to p_LM * p_classifier ** strength
    key_guide: float = 0.0
    key_guide_gate: float = 0.3
    # a genre pathway (GenrePathway; beyond the paper): a classifier of the caption's genre-and-form phrase
    # ("classical string quartet", "rock groove") from plain note traits, one class per [genre, form] here
    # (empty: none); with `genre_guide` > 0 it guides decoding where the LM names a genre, as `key_guide` does
    genre_classes: list[list[str]] = field(default_factory=list)
    genre_guide: float = 0.0
    genre_lm_weight: float = 0.25  # the genre guide's mix: p_LM ** this * p_classifier ** genre_guide
    # instrument-guided decoding: where the LM names instruments, only those the MIDI programs hold, each once
    instrument_guide: bool = False
    guide_gate: float = 0.3  # the genre and instrument guides' gate (`key_guide_gate` for theirs)
    clip_seconds: float = 20.0  # the clip length of the training data (documentation for users)
    extra: dict = field(default_factory=dict)

    @property
    def slots(self) -> int:
        """Prefix embeddings in the prompt: the k music vectors and the key pathway's."""
        return self.k + (1 if self.key_pathway else 0)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> MidiLlamaConfig:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def make_projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))
    raise ValueError(f"unknown projector {kind!r} (linear or mlp)")


def select_windows(notes: np.ndarray, window: int, max_windows: int) -> list[np.ndarray]:
    """Consecutive windows of `window` notes (the last one ending at the last note); past `max_windows`
    of them, that many spread evenly."""
    from midilm.models.encoder import note_window

    n = len(notes)
    count = max(-(-n // window), 1)
    chosen = range(count) if count <= max_windows else np.linspace(0, count - 1, max_windows).round().astype(int)
    starts = [min(int(i) * window, max(n - window, 0)) for i in chosen]  # the last window is a full one
    return [w for w in (note_window(notes[s:], window) for s in starts) if len(w)]


@torch.no_grad()
def pool_notes(encoder, items: Sequence[np.ndarray], k: int, max_windows: int, window: int | None = None,
               batch_size: int = 16, layers: Sequence[int] = (-1,), fields: bool = False) -> torch.Tensor:
    """[B, k, H * len(layers)] pooled encoder states of OctupleMIDI note arrays (one item's windows pooled
    together); `layers` index the encoder's hidden states (0 = the embedding layer, -1 = the last). With
    `fields`, [B, k, 8 * H]: the notes' field embeddings, concatenated, instead of any layer's states."""
    from midilm.models.encoder import batch_ids, chunk_bounds

    window = min(window or encoder.config.max_notes, encoder.config.max_notes)
    windows: list[tuple[int, np.ndarray]] = []
    for i, notes in enumerate(items):
        ws = select_windows(np.asarray(notes, dtype=np.int64).reshape(-1, 8), window, max_windows)
        if not ws:
            raise ValueError(f"item {i} has no notes")
        windows += [(i, w) for w in ws]
    device = next(encoder.parameters()).device
    states: list[list[torch.Tensor]] = [[] for _ in items]
    order = sorted(range(len(windows)), key=lambda j: len(windows[j][1]))  # similar lengths share a batch
    parts: dict[int, torch.Tensor] = {}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids = batch_ids([windows[j][1] for j in idx], encoder.config.pad_token_id).to(device)
        if fields:
            hidden = encoder.embed_tokens(ids).view(len(idx), -1, 8 * encoder.config.hidden_size).float()
        elif list(layers) == [-1]:
            hidden = encoder(ids).last_hidden_state.float()
        else:
            per_layer = encoder(ids, output_hidden_states=True).hidden_states
            hidden = torch.cat([per_layer[i] for i in layers], dim=-1).float()
        for row, j in enumerate(idx):
            parts[j] = hidden[row, 1 : 1 + len(windows[j][1])]
    for j, (i, _) in enumerate(windows):
        states[i].append(parts[j])
    out = []
    for st in states:
        notes = torch.cat(st)
        out.append(torch.stack([notes[a:b].mean(0) for a, b in chunk_bounds(len(notes), k)]))
    return torch.stack(out)


PITCH_CLASSES = 12


def pitch_class_profile(notes: np.ndarray) -> np.ndarray:
    """[12] float32: the share of sounding time (in beats) of each pitch class, C first, over the pitched notes
    of OctupleMIDI field values (drums left out; zeros when there are none). Transposing the notes by s
    semitones rolls it by s: the key is in it, independent of the encoder."""
    from midilm.codecs.octuple import DUR_DEC, FIELDS, MAX_INST

    n = np.asarray(notes, dtype=np.int64).reshape(-1, 8)
    pitched = n[n[:, FIELDS.index("program")] != MAX_INST + 1]
    codes = np.clip(pitched[:, FIELDS.index("duration")], 0, len(DUR_DEC) - 1)
    weight = np.maximum(np.asarray(DUR_DEC, dtype=np.float64)[codes], 1.0)  # a grace note counts one step
    out = np.bincount(pitched[:, FIELDS.index("pitch")] % PITCH_CLASSES, weights=weight, minlength=PITCH_CLASSES)
    total = out.sum()
    return (out / total if total > 0 else out).astype(np.float32)


KEYS = 24  # 12 major keys (tonic C first), then 12 minor keys
KEY_MODES = ("major", "minor")
KEY_NAMES = tuple(f"{t} {m}" for m in KEY_MODES for t in TONICS)  # the analysis's spellings
KEY_EVIDENCE = 11  # pitch-class histograms in `key_evidence`
_ROTATE = (np.arange(PITCH_CLASSES)[None, :] + np.arange(PITCH_CLASSES)[:, None]) % PITCH_CLASSES


def _unit(v: np.ndarray) -> np.ndarray:
    total = float(v.sum())
    return v / total if total > 0 else v.astype(np.float64)


def key_evidence(notes: np.ndarray) -> np.ndarray:
    """[12, 11 * 12] float32: for each candidate tonic t (row), eleven pitch-class histograms of the pitched notes
    of OctupleMIDI field values, each rotated so that index 0 is t. The histograms weigh notes by sounding time,
    by count, by log sounding time, as the bass (the lowest note of each onset), on the beat, and look at the
    first and last bass notes, the last chord, the last and first eight bass notes and the last eight onsets
    (tunes state their tonic at the close). One weight vector per mode then scores all 12 tonics alike, so a
    transposition of the notes moves the scores with it. Zeros when there are no pitched notes."""
    from midilm.codecs.octuple import DUR_DEC, FIELDS, MAX_INST, POS_RESOLUTION

    n = np.asarray(notes, dtype=np.int64).reshape(-1, 8)
    n = n[n[:, FIELDS.index("program")] != MAX_INST + 1]
    if not len(n):
        return np.zeros((PITCH_CLASSES, KEY_EVIDENCE * PITCH_CLASSES), dtype=np.float32)
    bar, pos, pitch = n[:, FIELDS.index("bar")], n[:, FIELDS.index("position")], n[:, FIELDS.index("pitch")]
    dur = np.maximum(np.asarray(DUR_DEC, dtype=np.float64), 1.0)[np.clip(n[:, FIELDS.index("duration")], 0,
                                                                           len(DUR_DEC) - 1)]
    onset = bar * 4096 + pos  # positions within a bar stay below 4096
    order = np.lexsort((pitch, onset))  # by onset, lowest pitch first
    pc, dur, onset, pos = pitch[order] % PITCH_CLASSES, dur[order], onset[order], pos[order]
    first = np.r_[True, onset[1:] != onset[:-1]]  # the lowest note of each onset: its bass
    group = np.cumsum(first) - 1
    last = group == group[-1]
    closing = group >= group[-1] - 7
    bass, bass_dur = pc[first], dur[first]
    on_beat = pos % POS_RESOLUTION == 0
    sounding = _unit(np.bincount(pc, dur, PITCH_CLASSES))
    hist = np.stack([
        sounding,
        _unit(np.bincount(pc, minlength=PITCH_CLASSES).astype(np.float64)),
        np.log(sounding + 0.01),
        _unit(np.bincount(bass, bass_dur, PITCH_CLASSES)),
        _unit(np.bincount(pc[on_beat], dur[on_beat], PITCH_CLASSES)),
        np.eye(PITCH_CLASSES)[bass[0]],
        np.eye(PITCH_CLASSES)[bass[-1]],
        _unit(np.bincount(pc[last], dur[last], PITCH_CLASSES)),
        _unit(np.bincount(bass[-8:], minlength=PITCH_CLASSES).astype(np.float64)),
        _unit(np.bincount(bass[:8], minlength=PITCH_CLASSES).astype(np.float64)),
        _unit(np.bincount(pc[closing], dur[closing], PITCH_CLASSES)),
    ])
    return hist[:, _ROTATE].transpose(1, 0, 2).reshape(PITCH_CLASSES, -1).astype(np.float32)


def roll_keys(probs: np.ndarray, semitones: int) -> np.ndarray:
    """[..., 24] key distributions moved up by `semitones` (each mode's 12 tonics rolled)."""
    p = np.asarray(probs).reshape(*np.shape(probs)[:-1], 2, PITCH_CLASSES)
    return np.roll(p, semitones, axis=-1).reshape(np.shape(probs))


class KeyPathway(nn.Module):
    """Key classifier and key embeddings: `probs` scores the 24 keys from `key_evidence` (standardised, one
    linear score per mode shared by all tonics), `prefix` mixes the 24 learned key embeddings by those
    probabilities into one prefix embedding."""

    def __init__(self, llm_hidden: int, n_evidence: int = KEY_EVIDENCE * PITCH_CLASSES):
        super().__init__()
        self.scorer = nn.Linear(n_evidence, len(KEY_MODES))
        self.register_buffer("evidence_mean", torch.zeros(n_evidence))
        self.register_buffer("evidence_std", torch.ones(n_evidence))
        self.embeddings = nn.Parameter(torch.zeros(KEYS, llm_hidden))

    def logits(self, evidence: torch.Tensor) -> torch.Tensor:
        """[B, 12, F] evidence -> [B, 24] key logits (major tonics C..B, then minor)."""
        x = (evidence.float() - self.evidence_mean) / self.evidence_std
        return self.scorer(x).transpose(1, 2).reshape(len(x), KEYS)

    @torch.no_grad()
    def probs(self, notes: Sequence[np.ndarray]) -> torch.Tensor:
        ev = torch.from_numpy(np.stack([key_evidence(n) for n in notes])).to(self.evidence_mean.device)
        return self.logits(ev).softmax(-1)

    def prefix(self, probs: torch.Tensor) -> torch.Tensor:
        """[B, 24] -> [B, 1, D]."""
        return (probs.float() @ self.embeddings)[:, None, :]

    def init_embeddings(self, llm, tokenizer) -> None:
        """Each key's embedding starts as the sum of the LLM's input embeddings of " <tonic> <mode>"'s tokens."""
        table = llm.get_input_embeddings().weight
        with torch.no_grad():
            for i, name in enumerate(KEY_NAMES):
                ids = tokenizer(" " + name, add_special_tokens=False).input_ids
                self.embeddings[i].copy_(table[ids].float().sum(0))

    def fit(self, evidence: np.ndarray, labels: np.ndarray, steps: int = 400, lr: float = 1e-2,
            weight_decay: float = 1e-4, seed: int = 0) -> float:
        """Train the classifier (full batch, Adam, cross-entropy) on [N, 12, F] evidence and [N] key indices;
        sets the standardisation from the same rows. Returns the training accuracy."""
        x = torch.as_tensor(np.asarray(evidence, dtype=np.float32))
        flat = x.reshape(-1, x.shape[-1])
        with torch.no_grad():
            self.evidence_mean.copy_(flat.mean(0))
            self.evidence_std.copy_(flat.std(0).clamp_min(1e-4))
        return fit_linear(self.scorer, self.logits, x, torch.as_tensor(np.asarray(labels, dtype=np.int64)),
                          steps=steps, lr=lr, weight_decay=weight_decay, seed=seed)


# a key name follows these in the answers and captions ("It is in G major.", "in a minor key, A minor.")
_KEY_TRIGGERS = (" in", " is", " key,")
_MODE_TRIGGERS = (" a",)  # and a bare mode word this ("It is in a minor key.")
# at the answer's start a tonic letter may also begin a word ("A pop piece", "Drums.", "Bass and piano.")
_AMBIGUOUS = tuple("ABCDEFG")
# a genre word follows these ("The piece belongs to the pop genre.", "Its style is folk."); the caption's
# genre-and-form phrase follows its article at the start ("A classical string quartet for ...")
_GENRE_TRIGGERS = (" style is", " genre is")
_GENRE_NOUN_TRIGGERS = (" to the",)  # "belongs to the pop genre": the word and " genre" are one name
# an instrument name may follow these ("for violin, viola and cello", "played by a piano"); after " for" the
# caption's instrument list is written as the notes give it ("A pop piece for piano")
_INSTRUMENT_TRIGGERS = (" for", ",", " and", " by", " a")
_INSTRUMENT_LIST = (" for",)
# and after these an answer's list, each with its article ("The piece is played by a violin, a viola and a cello."
# closed by its full stop; "You can hear a violin and a cello, with the violin ...")
_INSTRUMENT_ANSWER_LIST = (" played by",)
_INSTRUMENT_HEAR_LIST = (" hear",)
# sentences the LM may begin an answer with, whose names the triggers above guide ("The piece is played by ...",
# "It is in G major."): where it begins one, the name a question asks for is not written at the answer's start
_OPENERS = ("The", "It", "Its", "This", "You", "There")
LIST_GATE = 0.01  # the LM's probability of starting an instrument name after " for" that begins the list
# every instrument word a caption or answer uses: the GM programs' plain names, then the drum kit's
INSTRUMENT_WORDS = tuple(dict.fromkeys(PLAIN_NAMES)) + ("drums",)


def key_name_paths(tokenizer) -> list[NamePath]:
    """The token sequences that name a key or a mode in the model's answers, each naming key indices (0-23);
    bare mode words name the 12 keys of their mode. At the answer's start a key name is due where the question
    asks for the key, a mode word where it asks for the mode (`NamePath.asked`)."""
    after_key, after_mode = (tuple(token_ids(tokenizer, t) for t in ts) for ts in (_KEY_TRIGGERS, _MODE_TRIGGERS))
    paths = []
    for k, name in enumerate(KEY_NAMES):
        for text in dict.fromkeys((name, spelled_key(name))):
            paths.append(NamePath(token_ids(tokenizer, " " + text), (k,), after=after_key))
        paths.append(NamePath(token_ids(tokenizer, name), (k,), at=((),)))
        paths.append(NamePath(token_ids(tokenizer, name), (k,), at=((),), asked="key"))
    for m, mode in enumerate(KEY_MODES):
        keys = tuple(range(m * PITCH_CLASSES, (m + 1) * PITCH_CLASSES))
        paths.append(NamePath(token_ids(tokenizer, " " + mode), keys, after=after_mode))
        paths.append(NamePath(token_ids(tokenizer, mode.capitalize()), keys, at=((),)))
        paths.append(NamePath(token_ids(tokenizer, mode.capitalize()), keys, at=((),), asked="mode"))
    return paths


def genre_phrase(genre: str, form: str) -> str:
    """A genre class's phrase as the fact caption writes it: "classical string quartet", "piece"."""
    return " ".join(x for x in (genre, form) if x)


def genre_name_paths(tokenizer, classes: Sequence[Sequence[str]]) -> list[NamePath]:
    """The token sequences that name a genre class ([genre, form]): its whole phrase after the caption's
    opening article ("A" or "An", as `captions.fact_caption` chooses it), and its genre word after "style is",
    "genre is", "to the" (then with " genre") or capitalised at the answer's start ("Pop."), naming every class
    of that genre; there it is due where the question asks for the genre or style (`NamePath.asked`)."""
    after, before_noun = (tuple(token_ids(tokenizer, t) for t in ts) for ts in (_GENRE_TRIGGERS, _GENRE_NOUN_TRIGGERS))
    paths = []
    by_genre: dict[str, list[int]] = {}
    for c, (genre, form) in enumerate(classes):
        phrase = genre_phrase(genre, form)
        article = cap(indefinite_article(phrase))
        paths.append(NamePath(token_ids(tokenizer, " " + phrase), (c,), at=(token_ids(tokenizer, article),),
                              force=True))
        if genre:
            by_genre.setdefault(genre, []).append(c)
    for genre, cs in by_genre.items():
        paths.append(NamePath(token_ids(tokenizer, " " + genre), tuple(cs), after=after, force=True))
        paths.append(NamePath(token_ids(tokenizer, f" {genre} genre"), tuple(cs), after=before_noun, force=True))
        start = token_ids(tokenizer, genre[:1].upper() + genre[1:])
        if len(tokenizer.decode(start[:1])) > 2:  # a letter or two may start any other word
            paths.append(NamePath(start, tuple(cs), at=((),)))
        paths.append(NamePath(start, tuple(cs), at=((),), asked="genre"))  # "F" + "olk" too, when asked
    return paths


def instrument_name_paths(tokenizer) -> list[NamePath]:
    """The token sequences that name each of `INSTRUMENT_WORDS` inside an instrument list."""
    after = tuple(token_ids(tokenizer, t) for t in _INSTRUMENT_TRIGGERS)
    return [NamePath(token_ids(tokenizer, " " + w), (i,), after=after) for i, w in enumerate(INSTRUMENT_WORDS)]


def instrument_shares(notes: np.ndarray) -> np.ndarray:
    """[len(INSTRUMENT_WORDS)] float32: the share of these OctupleMIDI notes that each instrument word's GM
    programs (or the drum kit) play; 0 for the instruments that do not play."""
    from midilm.codecs.octuple import FIELDS

    n = np.asarray(notes, dtype=np.int64).reshape(-1, 8)
    out = np.zeros(len(INSTRUMENT_WORDS), dtype=np.float32)
    programs, counts = np.unique(n[:, FIELDS.index("program")], return_counts=True)
    for program, count in zip(programs.tolist(), counts.tolist()):
        out[INSTRUMENT_WORDS.index(plain_name(int(program)))] += count / len(n)
    return out


def instrument_list(shares: np.ndarray | torch.Tensor, limit: int | None = FACT_CAPTION_INSTRUMENTS,
                    articles: bool = False) -> str:
    """An instrument list from `instrument_shares`, most notes first, as the data writes it: a fact caption's (at
    most six, "drums, synth lead and fretless bass") or, with `articles` and no limit, an answer's ("a violin, a
    viola and a cello")."""
    s = np.asarray(shares, dtype=np.float64)
    words = [INSTRUMENT_WORDS[int(i)] for i in np.argsort(-s, kind="stable") if s[i] > 0][:limit]
    return join_list([article(w) for w in words] if articles else words)


GENRE_TRAITS = 56  # values in `piece_traits`
_GM_FAMILIES = 16


def piece_traits(notes: np.ndarray) -> np.ndarray:
    """[GENRE_TRAITS] float32: plain traits of OctupleMIDI notes that tell sources and styles apart without
    reading any label: the drum kit's share, the GM families' shares, how many programs, polyphony, note
    density, the velocities' spread and how many distinct ones (quantised scores have one), tempo and its
    changes, the time signature, pitch range and register, note lengths, how on-grid the onsets are, length."""
    from midilm.codecs.octuple import DUR_DEC, FIELDS, MAX_INST, POS_RESOLUTION, TS_LIST, tempo_value

    n = np.asarray(notes, dtype=np.int64).reshape(-1, 8)
    if not len(n):
        return np.zeros(GENRE_TRAITS, dtype=np.float32)
    col = {f: n[:, i] for i, f in enumerate(FIELDS)}
    drum = col["program"] == MAX_INST + 1
    pitched = ~drum
    programs = np.unique(col["program"][pitched])
    fam = np.bincount(col["program"][pitched] // 8, minlength=_GM_FAMILIES)[:_GM_FAMILIES] / len(n)
    onset = col["bar"] * 4096 + col["position"]
    per_onset = np.unique(onset[pitched], return_counts=True)[1] if pitched.any() else np.ones(1)
    bars = int(col["bar"].max()) + 1
    ts = [TS_LIST[int(t)] for t in np.unique(col["time_signature"])]
    ts_main = TS_LIST[int(np.bincount(col["time_signature"]).argmax())]
    beats = max(bars * ts_main[0] * 4 / ts_main[1], 1.0)
    vel = col["velocity"].astype(np.float64)
    tempos = np.unique(col["tempo"])
    pitch = col["pitch"][pitched].astype(np.float64) if pitched.any() else np.full(1, 60.0)  # drums only: neutral
    dur = np.maximum(np.asarray(DUR_DEC, dtype=np.float64), 1.0)[np.clip(col["duration"], 0, len(DUR_DEC) - 1)]
    pos = col["position"][pitched] if pitched.any() else col["position"]
    log_dur = np.log(dur[pitched] if pitched.any() else dur)
    feats = [
        drum.mean(), float(drum.any()), float(pitched.any()),
        *fam,
        np.log1p(len(programs)), np.log1p(len(programs) + drum.any()),
        np.log(per_onset.mean()), (per_onset >= 3).mean(), (per_onset >= 5).mean(), np.log1p(per_onset.max()),
        np.log(len(n) / beats), np.log1p(bars), np.log1p(len(n)),
        vel.mean() / 32.0, vel.std() / 8.0, np.log1p(len(np.unique(col["velocity"]))),
        np.bincount(col["velocity"]).max() / len(n),
        np.log(np.mean([tempo_value(int(t)) for t in col["tempo"][:: max(len(n) // 256, 1)]])),
        np.log1p(len(tempos) - 1), float(len(ts) > 1),
        float(ts_main == (4, 4)), float(ts_main == (3, 4)), float(ts_main == (2, 4)), float(ts_main == (6, 8)),
        float(ts_main[1] == 2), float(ts_main not in ((4, 4), (3, 4), (2, 4), (6, 8)) and ts_main[1] != 2),
        pitch.mean() / 64.0, pitch.std() / 12.0, np.ptp(pitch) / 48.0,
        np.percentile(pitch, 5) / 64.0, np.percentile(pitch, 95) / 64.0,
        log_dur.mean() / 3.0, log_dur.std() / 2.0,
        (pos % POS_RESOLUTION == 0).mean(), (pos % (POS_RESOLUTION // 2) == 0).mean(),
        (pos % (POS_RESOLUTION // 4) == 0).mean(), (pos % (POS_RESOLUTION // 4) != 0).mean(),
        (col["position"][drum] % (POS_RESOLUTION // 4) != 0).mean() if drum.any() else 0.0,
        float(len(programs) == 1 and pitched.all()),
        float(set(programs.tolist()) <= {40, 41, 42, 43} and len(programs) > 0),
        float(set(programs.tolist()) <= {0} and len(programs) > 0),
    ]
    return np.asarray(feats, dtype=np.float32)


def fit_linear(scorer: nn.Linear, logits, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
               steps: int = 400, lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Fit `scorer` (full batch, Adam, cross-entropy weighted per row by `weights`, if any) so that `logits(x)`
    predicts y; returns the (unweighted) training accuracy. The scorer's own requires_grad flags are kept."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scorer.weight.normal_(0.0, 0.01, generator=gen)
        scorer.bias.zero_()
    trainable = [p.requires_grad for p in scorer.parameters()]
    scorer.requires_grad_(True)
    opt = torch.optim.Adam(scorer.parameters(), lr=lr, weight_decay=weight_decay)
    w = None if weights is None else weights.float() / weights.float().sum()
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            if w is None:
                loss = nn.functional.cross_entropy(logits(x), y)
            else:
                loss = (nn.functional.cross_entropy(logits(x), y, reduction="none") * w).sum()
            loss.backward()
            opt.step()
    for p, flag in zip(scorer.parameters(), trainable):
        p.requires_grad_(flag)
    with torch.no_grad():
        return float((logits(x).argmax(-1) == y).float().mean())


class GenrePathway(nn.Module):
    """Genre classifier: a log-linear score per genre class ([genre, form] in the config's `genre_classes`) of
    the standardised `piece_traits`. Its distribution guides decoding (`NameGuide`); no prefix embedding."""

    def __init__(self, n_classes: int, n_traits: int = GENRE_TRAITS):
        super().__init__()
        self.scorer = nn.Linear(n_traits, n_classes)
        self.register_buffer("trait_mean", torch.zeros(n_traits))
        self.register_buffer("trait_std", torch.ones(n_traits))

    def logits(self, traits: torch.Tensor) -> torch.Tensor:
        return self.scorer((traits.float() - self.trait_mean) / self.trait_std)

    @torch.no_grad()
    def probs(self, notes: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([piece_traits(n) for n in notes])).to(self.trait_mean.device)
        return self.logits(x).softmax(-1)

    def fit(self, traits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, steps: int = 600,
            lr: float = 3e-2, weight_decay: float = 1e-4, seed: int = 0) -> float:
        """Train on [N, GENRE_TRAITS] traits and [N] class indices, each row weighted (e.g. so that every source
        counts alike); sets the standardisation from the same rows. Returns the training accuracy."""
        x = torch.as_tensor(np.asarray(traits, dtype=np.float32))
        with torch.no_grad():
            self.trait_mean.copy_(x.mean(0))
            self.trait_std.copy_(x.std(0).clamp_min(1e-4))
        w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
        return fit_linear(self.scorer, self.logits, x, torch.as_tensor(np.asarray(labels, dtype=np.int64)), w,
                          steps, lr, weight_decay, seed)


def key_index(name: str | None) -> int | None:
    """"G major" -> 7, "E minor" -> 16; None where no key is named (enharmonic spellings accepted)."""
    key = normalise_key(name) if name else None
    if key is None:
        return None
    tonic, mode = key.split(" ")
    return KEY_MODES.index(mode) * PITCH_CLASSES + TONICS.index(tonic)


def merge_lora_files(llm, adapter_dir: Path) -> bool:
    """Add a plain LoRA adapter (peft layout) into the LM's weights, W += alpha / r * B @ A, without
    importing peft (which costs seconds at start-up). False when the adapter uses anything else (DoRA,
    rsLoRA, per-module ranks, biases, extra saved modules): the caller then merges through peft."""
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    plain = (cfg.get("peft_type") == "LORA" and not cfg.get("use_dora") and not cfg.get("use_rslora")
             and not cfg.get("rank_pattern") and not cfg.get("alpha_pattern") and cfg.get("bias") == "none"
             and not cfg.get("modules_to_save") and not cfg.get("fan_in_fan_out") and not cfg.get("lora_bias"))
    if not plain:
        return False
    scale = cfg["lora_alpha"] / cfg["r"]
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    params = dict(llm.named_parameters())
    with torch.no_grad():
        for name, a in tensors.items():
            if ".lora_A." not in name:
                continue
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            target = name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            if target not in params:
                raise ValueError(f"{adapter_dir}: adapter tensor {name} matches no weight of the LM")
            w = params[target]
            w += (scale * (b.float() @ a.float())).to(w.dtype)
    return True


def _clean_base_state(model) -> dict[str, torch.Tensor]:
    """The base LM's own weights from a peft-wrapped model (LoRA tensors dropped, names restored)."""
    out = {}
    for name, value in model.state_dict().items():
        if "lora_" in name:
            continue
        out[name.replace(".base_layer.", ".")] = value
    return out


class MidiLlama(nn.Module):
    """Frozen encoder -> pooled vectors -> projector -> prefix embeddings -> causal LM."""

    def __init__(self, encoder, llm, tokenizer, config: MidiLlamaConfig, projector: nn.Module | None = None):
        super().__init__()
        self.encoder, self.llm, self.tokenizer, self.config = encoder, llm, tokenizer, config
        self.projector = projector or make_projector(config.projector, config.encoder_hidden, config.llm_hidden)
        # per-dimension standardisation of the pooled vectors (set from the training rows in stage 1): the
        # pooled states share a large common component that would otherwise swamp what tells pieces apart
        self.register_buffer("feature_mean", torch.zeros(config.encoder_hidden))
        self.register_buffer("feature_std", torch.ones(config.encoder_hidden))
        self.key_pathway = KeyPathway(config.llm_hidden) if config.key_pathway else None
        self.genre_pathway = GenrePathway(len(config.genre_classes)) if config.genre_classes else None
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        depth = 0 if config.pool_fields else max(config.pool_layers) if min(config.pool_layers) >= 0 else None
        if depth is not None and depth < len(encoder.layers):
            # layers above the deepest pooled one never influence the output: drop them (cost and size)
            encoder.layers = encoder.layers[:depth]
            encoder.config.num_hidden_layers = depth

    # --- parts -------------------------------------------------------------------------------------

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout in the features, in training or not
        return self

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    def base_llm(self):
        """The causal LM under any LoRA wrapper."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def set_feature_stats(self, features: np.ndarray, start: int = 0, gain: float = 1.0) -> None:
        """Standardise the pooled vectors with the mean and standard deviation of these ([n, k, H]); with
        `start`, only dimensions from `start` on (the others keep theirs); with `gain`, those dimensions come
        out with that standard deviation instead of 1 (under Adam, as if their projector columns had a
        learning rate `gain` times the rest: for inputs added to a trained projector at zero)."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32).reshape(-1, self.config.encoder_hidden))
        self.feature_mean[start:].copy_(f[:, start:].mean(0))
        self.feature_std[start:].copy_(f[:, start:].std(0).clamp_min(1e-4) / gain)

    def features(self, notes: Sequence[np.ndarray], batch_size: int = 16) -> torch.Tensor:
        """Pooled frozen-encoder vectors [B, k, H_enc] of OctupleMIDI note arrays (with `pitch_classes`, each
        vector ends with the item's pitch-class profile; with `key_pathway`, then with the key classifier's 24
        probabilities, which `embed` splits off again)."""
        pooled = pool_notes(self.encoder, notes, self.config.k, self.config.max_windows, self.config.window_notes,
                            batch_size, self.config.pool_layers, self.config.pool_fields)
        parts = [pooled]
        if self.config.pitch_classes:
            parts.append(torch.from_numpy(np.stack([pitch_class_profile(n) for n in notes])).to(pooled)[:, None, :])
        if self.key_pathway is not None:
            parts.append(self.key_pathway.probs(notes).to(pooled)[:, None, :])
        if self.genre_pathway is not None:
            parts.append(self.genre_pathway.probs(notes).to(pooled)[:, None, :])
        if self.config.instrument_guide:
            parts.append(torch.from_numpy(np.stack([instrument_shares(n) for n in notes])).to(pooled)[:, None, :])
        return torch.cat([p.expand(-1, pooled.shape[1], -1) for p in parts], dim=-1)

    def guide_columns(self) -> dict[str, slice]:
        """Where `features` keeps, after the projector's input, the key and genre distributions and the
        instruments present (those the model has)."""
        out, at = {}, self.config.encoder_hidden
        for name, width in (("key", KEYS if self.key_pathway is not None else 0),
                            ("genre", len(self.config.genre_classes) if self.genre_pathway is not None else 0),
                            ("instruments", len(INSTRUMENT_WORDS) if self.config.instrument_guide else 0)):
            if width:
                out[name] = slice(at, at + width)
                at += width
        return out

    def guides(self, features: torch.Tensor, questions: Sequence[str | None] | None = None
               ) -> list[NameGuide | ListGuide]:
        """The guided-decoding processors (key, genre, instruments: those switched on) for a batch's features;
        with the instrument guide, first, the `ListGuide`s that write the caption's and the answers' instrument
        lists. `questions` (each row's last question, if known) make the name a question asks for due at its
        answer's start (`name_guide.question_kind`): "Which instruments are playing?" is answered by the notes'
        list ("Violin, viola and cello."), "What genre is this?" by the genre classifier's word."""
        if getattr(self, "_paths", None) is None:
            tok = self.tokenizer
            self._paths = {"key": key_name_paths(tok), "genre": genre_name_paths(tok, self.config.genre_classes),
                           "instruments": instrument_name_paths(tok)}
            self._ambiguous = {"key": single_tokens(tok, _AMBIGUOUS),
                               "genre": single_tokens(tok, _AMBIGUOUS + ("An", "The", "It", "This")),
                               # a letter or two that may start any word (" m" of a rare "marimba") is never
                               # removed outside an instrument list
                               "instruments": frozenset(t for t in (p.tokens[0] for p in self._paths["instruments"])
                                                        if len(tok.decode([t]).strip()) <= 2)}
        cols, cfg, out = self.guide_columns(), self.config, []
        asked = [question_kind(q) for q in questions] if questions is not None else []
        openers = single_tokens(self.tokenizer, _OPENERS)
        end = token_ids(self.tokenizer, ".") + (self.tokenizer.eos_token_id,)  # a short answer: "Classical."
        settings = {"key": (cfg.key_guide, cfg.key_guide_gate, {}),
                    "genre": (cfg.genre_guide, cfg.guide_gate, {"lm_weight": cfg.genre_lm_weight}),
                    "instruments": (1.0 if cfg.instrument_guide else 0.0, cfg.guide_gate,
                                    {"exclusive": True, "hard": True, "max_named": FACT_CAPTION_INSTRUMENTS})}
        for name, (strength, gate, options) in settings.items():
            if name in cols and strength > 0:
                probs = features[:, 0, cols[name]].to(self.device)
                if name == "instruments":
                    probs = (probs > 0).float()  # present or not; the shares order the list below
                out.append(NameGuide(self._paths[name], probs, strength, gate, self._ambiguous[name], asked=asked,
                                     openers=openers, end=end, **options))
        if "instruments" in cols:
            tok, shares = self.tokenizer, features[:, 0, cols["instruments"]].cpu().numpy()
            starts = frozenset(p.tokens[0] for p in self._paths["instruments"])
            starts |= frozenset(token_ids(tok, f" {a}")[0] for a in ("a", "an"))
            comma = (" and", ",")  # after these lists the sentence ends
            for triggers, limit, articles, closed in ((_INSTRUMENT_LIST, FACT_CAPTION_INSTRUMENTS, False, (" and",)),
                                                      (_INSTRUMENT_ANSWER_LIST, None, True, comma),
                                                      (_INSTRUMENT_HEAR_LIST, None, True, (" and",))):
                spans = [token_ids(tok, " " + instrument_list(row, limit, articles)) if row.any() else ()
                         for row in shares]
                # first: their gates read the LM's own probabilities, before the instrument guide removes any
                out.insert(0, ListGuide([token_ids(tok, t) for t in triggers], spans, starts, LIST_GATE,
                                        single_tokens(tok, closed)))
            # the short answer to an instruments question: the whole list, capitalised ("Violin, viola and cello.")
            spans = [token_ids(tok, cap(instrument_list(row, None)) + ".") + end[1:]
                     if kind == "instruments" and row.any() else () for row, kind in zip(shares, asked)]
            if any(spans):
                out.insert(0, ListGuide([()], spans, starts, 0.0, openers=openers))
        return out

    def add_key_pathway(self) -> KeyPathway:
        """Give the model a key pathway (one more prefix embedding); its key embeddings start as the LLM's
        embeddings of the key names, its classifier untrained (`KeyPathway.fit`)."""
        if self.key_pathway is not None:
            raise ValueError("the model already has a key pathway")
        self.key_pathway = KeyPathway(self.config.llm_hidden).to(self.device)
        self.key_pathway.init_embeddings(self.base_llm(), self.tokenizer)
        self.config.key_pathway = True
        return self.key_pathway

    def add_genre_pathway(self, classes: Sequence[Sequence[str]]) -> GenrePathway:
        """Give the model a genre pathway over these [genre, form] classes, its classifier untrained
        (`GenrePathway.fit`); it adds no prefix embedding, so the LM's inputs stay as they were."""
        if self.genre_pathway is not None:
            raise ValueError("the model already has a genre pathway")
        self.config.genre_classes = [[str(g), str(f)] for g, f in classes]
        self.genre_pathway = GenrePathway(len(classes)).to(self.device)
        return self.genre_pathway

    def add_pitch_classes(self) -> int:
        """Widen a model trained without `pitch_classes` to read them: the projector's first layer gets 12
        input columns at zero (it answers exactly as before until trained) and the standardisation 12 neutral
        entries (set them with `set_feature_stats(features, start)`). Returns that start: the old width."""
        if self.config.pitch_classes:
            raise ValueError("the model already reads pitch classes")
        first = self.projector if isinstance(self.projector, nn.Linear) else self.projector[0]
        width = first.in_features
        wider = nn.Linear(width + PITCH_CLASSES, first.out_features).to(first.weight)
        with torch.no_grad():
            wider.weight.zero_()
            wider.weight[:, :width].copy_(first.weight)
            wider.bias.copy_(first.bias)
        if isinstance(self.projector, nn.Linear):
            self.projector = wider
        else:
            self.projector[0] = wider
        self.feature_mean = torch.cat([self.feature_mean, self.feature_mean.new_zeros(PITCH_CLASSES)])
        self.feature_std = torch.cat([self.feature_std, self.feature_std.new_ones(PITCH_CLASSES)])
        self.config.encoder_hidden = width + PITCH_CLASSES
        self.config.pitch_classes = True
        return width

    def add_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.05, targets: Sequence[str] | None = None):
        """Wrap the LM with a trainable LoRA adapter (the base stays frozen)."""
        from peft import LoraConfig, get_peft_model

        targets = list(targets or ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                         task_type="CAUSAL_LM")
        self.llm = get_peft_model(self.llm, cfg)
        return self

    def freeze_llm(self) -> None:
        """Freeze the base LM; LoRA parameters (if any) stay trainable."""
        for name, p in self.llm.named_parameters():
            p.requires_grad_("lora_" in name)

    # --- batches -----------------------------------------------------------------------------------

    def batch(self, encoded: Sequence[Encoded], left_pad: bool = False) -> dict[str, torch.Tensor]:
        """input_ids (pad ids in the MIDI slots), attention_mask, labels and the slots' start positions."""
        k, pad = self.config.slots, self.tokenizer.pad_token_id
        seqs = [e.before + [pad] * k + e.after for e in encoded]
        labs = [[IGNORE] * (len(e.before) + k) + e.labels for e in encoded]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        slot = torch.zeros(len(seqs), dtype=torch.long)
        for i, (s, lab, e) in enumerate(zip(seqs, labs, encoded)):
            off = width - len(s) if left_pad else 0
            ids[i, off : off + len(s)] = torch.tensor(s)
            labels[i, off : off + len(s)] = torch.tensor(lab)
            mask[i, off : off + len(s)] = 1
            slot[i] = off + len(e.before)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "slot": slot}

    def embed(self, input_ids: torch.Tensor, slot: torch.Tensor, midi_features: torch.Tensor) -> torch.Tensor:
        """Text embeddings with the projected MIDI vectors written over the slots."""
        emb = self.llm.get_input_embeddings()(input_ids)
        width = self.config.encoder_hidden
        feats = (midi_features[..., :width].float() - self.feature_mean) / self.feature_std
        prefix = self.projector(feats)  # [B, k, D]; the small projector stays fp32
        if self.key_pathway is not None:
            prefix = torch.cat([prefix, self.key_pathway.prefix(midi_features[:, 0, width : width + KEYS])], dim=1)
        prefix = prefix.to(emb.dtype)
        k = prefix.shape[1]
        pos = slot[:, None] + torch.arange(k, device=slot.device)[None, :]
        where = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        where.scatter_(1, pos, True)
        emb = emb.clone()
        emb[where] = prefix.reshape(-1, prefix.shape[-1])  # row-major order matches the boolean mask's
        return emb

    def forward(self, input_ids, attention_mask, slot, midi_features, labels=None, **kwargs):
        emb = self.embed(input_ids, slot, midi_features)
        return self.llm(inputs_embeds=emb, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, features: torch.Tensor, encoded: Sequence[Encoded], max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 questions: Sequence[str | None] | None = None) -> list[str]:
        """Answers (greedy when temperature is 0, else sampled) with the KV cache, each stopping at EOS;
        `questions`, each row's last question, let the guides answer what it asks for (`guides`)."""
        b = self.batch(encoded, left_pad=True)
        dev = self.device
        emb = self.embed(b["input_ids"].to(dev), b["slot"].to(dev), features.to(dev))
        sample = temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": max_new_tokens, "use_cache": True,
                  "eos_token_id": self.tokenizer.eos_token_id, "pad_token_id": self.tokenizer.pad_token_id}
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        guides = self.guides(features, questions)
        if guides:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(guides)
        with torch.random.fork_rng(devices=[] if dev.type == "cpu" else [dev]):
            torch.manual_seed(seed)
            out = self.llm.generate(inputs_embeds=emb, attention_mask=b["attention_mask"].to(dev), **kwargs)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]

    # --- files -------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None, self_contained: bool = False,
                        base_llm: str | None = None) -> Path:
        """Write the directory layout above; `dtype` (e.g. torch.bfloat16) shrinks the saved weights.
        `base_llm` overrides the base LM's recorded name or path (default: where it was loaded from)."""
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        cast = (lambda sd: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}) if dtype else None

        def state(module) -> dict:
            sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            return cast(sd) if cast else sd

        base = self.base_llm()
        base_ref = _absolute(base_llm or str(getattr(base, "name_or_path", "") or ""))
        if self_contained or not base_ref:
            base_sd = _clean_base_state(base) if base is not self.llm else base.state_dict()
            base_sd = {k: v.detach().cpu().contiguous() for k, v in base_sd.items()}
            base.save_pretrained(out / "llm", state_dict=cast(base_sd) if cast else base_sd)
            self.tokenizer.save_pretrained(out / "llm")
            base_ref = "llm"
        else:
            self.tokenizer.save_pretrained(out / "tokenizer")
        encoder_ref = _absolute(str(getattr(self.encoder, "name_or_path", "") or ""))
        trained = any(p.requires_grad for p in self.encoder.parameters())
        if self_contained or trained or not encoder_ref or not Path(encoder_ref).is_dir():
            self.encoder.save_pretrained(out / "encoder", state_dict=state(self.encoder))
            encoder_ref = "encoder"
        if base is not self.llm:
            for cfg in self.llm.peft_config.values():
                cfg.base_model_name_or_path = base_ref if base_ref != "llm" else None
            self.llm.save_pretrained(out / "adapter")
        proj = {**state(self.projector), "feature_mean": self.feature_mean.cpu(), "feature_std": self.feature_std.cpu()}
        if self.key_pathway is not None:
            proj |= {f"{KEY_PREFIX}{k}": v for k, v in state(self.key_pathway).items()}
        if self.genre_pathway is not None:
            proj |= {f"{GENRE_PREFIX}{k}": v for k, v in state(self.genre_pathway).items()}
        save_file(proj, str(out / PROJECTOR_NAME), metadata={"format": "pt"})
        write_manifest(out, KIND, **self.config.to_json(), base_llm=base_ref, encoder=encoder_ref)
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str | None = None,
                        trainable: bool = False, merge_lora: bool = True, base_llm: str | None = None) -> MidiLlama:
        """Load a directory (local files only). `dtype` is the LLM's and encoder's (None: bf16 on a GPU that
        has it, else fp32); `base_llm` overrides the base LM's name or path recorded in midilm.json.
        `trainable` keeps LoRA separate and trainable (for more training); otherwise the adapter is merged
        into the LM for faster generation when `merge_lora`."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from midilm.models.encoder import MusicBertModel
        from midilm.models.llm_ref import load_causal_lm, resolve_llm

        hf_logging.disable_progress_bar()
        root = Path(path)
        manifest = read_manifest(root, expected_kind=KIND)
        config = MidiLlamaConfig.from_json(manifest)
        torch_dtype = resolve_dtype(dtype, device)
        base = _resolve_ref(root, base_llm or manifest.get("base_llm") or "llm", "base LLM")
        encoder_dir = _resolve_ref(root, manifest.get("encoder") or "encoder", "encoder")
        encoder = MusicBertModel.from_pretrained(encoder_dir, local_files_only=True, use_safetensors=True,
                                                 dtype=torch_dtype)
        llm = load_causal_lm(base, dtype=torch_dtype)  # a gguf: reference loads from its converted cache
        tok_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else resolve_llm(base)
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        adapter = root / "adapter"
        if adapter.is_dir() and not (merge_lora and not trainable and merge_lora_files(llm, adapter)):
            import warnings

            from peft import PeftModel

            llm = PeftModel.from_pretrained(llm, adapter, is_trainable=trainable)
            if merge_lora and not trainable:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # a transformers deprecation inside peft
                    llm = llm.merge_and_unload()
        model = cls(encoder, llm, tokenizer, config)
        proj = {k: v.float() for k, v in load_file(str(root / PROJECTOR_NAME)).items()}
        with torch.no_grad():  # directories written before the standardisation existed have no statistics
            model.feature_mean.copy_(proj.pop("feature_mean", model.feature_mean))
            model.feature_std.copy_(proj.pop("feature_std", model.feature_std))
        for prefix, pathway in ((KEY_PREFIX, model.key_pathway), (GENRE_PREFIX, model.genre_pathway)):
            if pathway is not None:
                pathway.load_state_dict({k.removeprefix(prefix): proj.pop(k) for k in list(proj)
                                         if k.startswith(prefix)})
        model.projector.load_state_dict(proj)
        if not trainable:
            model.eval()
        if device:
            model.to(device)
        return model


def _absolute(ref: str) -> str:
    """A local directory as an absolute path (the reference must not depend on the working directory); a hub
    name as it is."""
    return str(Path(ref).resolve()) if ref and Path(ref).is_dir() else ref


def _resolve_ref(root: Path, ref: str, what: str) -> str:
    """A saved part ("llm", "encoder": inside the directory) or a referenced one (a local path or an HF
    name in the local cache)."""
    inside = root / ref
    if inside.is_dir():
        return str(inside)
    if ref in ("llm", "encoder"):
        raise FileNotFoundError(f"{root} is incomplete: no {ref}/ folder and no {what} named in {MANIFEST}")
    if Path(ref).is_dir() or not Path(ref).is_absolute():
        return ref  # a directory, or a hub name that from_pretrained looks up in the local cache only
    raise FileNotFoundError(f"{root}: the {what} it was trained on, {ref}, is not here (pass its path, "
                            f"or save the model with self_contained=True to copy it in)")


def read_config(root: Path) -> MidiLlamaConfig:
    return MidiLlamaConfig.from_json(read_manifest(root, expected_kind=KIND))

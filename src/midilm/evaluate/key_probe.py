"""The key probe: how well a text-to-MIDI model reads the key a caption names, from its next-token
probabilities alone (no sampling, so far less noisy than CK over a few dozen generations).

Each prompt that names a key is rewritten to all 12 transpositions of that key (same mode). After the prompt,
onset 0 and the likeliest duration, the probe takes the model's distribution over the first pitched note and
sums it per pitch class. It reports the mean probability mass inside the named key's scale (a model blind to
the key name scores 7/12 = 0.583 on average over the 12 rewrites, whatever its favourite key) and how often the
named tonic is the likeliest pitch class (blind: 1/12 on average).
"""

from __future__ import annotations

from collections.abc import Iterable

from midilm.codecs.amt.vocab import DRUMS, DUR_OFFSET, MAX_DUR, MAX_PITCH, NOTE_OFFSET, TIME_OFFSET
from midilm.evaluate.generation import in_scale_share
from midilm.generate.steering import key_in_text, key_label, rename_key

BLIND_IN_SCALE = 7 / 12


def keyed_prompts(prompts: Iterable[str]) -> list[str]:
    """The prompts that name a key (the probe's inputs)."""
    return [p for p in prompts if key_in_text(p)]


def key_probe(model, prompts: Iterable[str], progress: bool = False) -> dict:
    """Probe a transformers `TextToMidiModel` on the prompts that name a key; returns the mean in-scale mass
    ("in_scale"), the share of rewrites whose likeliest first pitch class is the tonic ("tonic_top"), and
    the number of (prompt, key) pairs ("pairs")."""
    import torch

    lm, layout = model.model, model.layout
    keyed = keyed_prompts(prompts)
    if not keyed:
        raise ValueError("the key probe needs prompts that name a key (e.g. 'A folk reel in D major')")
    dur_lo, dur_hi = layout.music_id(DUR_OFFSET), layout.music_id(DUR_OFFSET + MAX_DUR)
    pitched = layout.music_id(NOTE_OFFSET) + torch.arange(DRUMS * MAX_PITCH)
    pitch_class = torch.arange(DRUMS * MAX_PITCH) % 12
    named = [(p, key_in_text(p)) for p in keyed]
    pairs = [(p, ((tonic + shift) % 12, mode)) for p, (tonic, mode) in named for shift in range(12)]
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="key probe", unit="prompt")
    mass = tonic_top = 0.0
    with torch.no_grad():
        for prompt, key in pairs:
            ids = model.prompt_ids(rename_key(prompt, key_label(key))) + [layout.music_id(TIME_OFFSET)]
            logits = lm(torch.tensor([ids])).logits[0, -1]
            duration = dur_lo + int(torch.argmax(logits[dur_lo:dur_hi]))
            logits = lm(torch.tensor([ids + [duration]])).logits[0, -1]
            per_class = torch.zeros(12).index_add_(0, pitch_class, torch.softmax(logits[pitched], 0))
            mass += in_scale_share(per_class.tolist(), key_label(key))
            tonic_top += int(torch.argmax(per_class)) == key[0]
    n = len(keyed) * 12
    return {"in_scale": mass / n, "tonic_top": tonic_top / n, "pairs": n, "prompts": len(keyed)}

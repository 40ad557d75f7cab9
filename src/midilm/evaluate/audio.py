"""Audio metrics of MIDI-LLM, only with model files the user supplies: CLAP score and FAD.

Both render the MIDI with FluidSynth (`midilm.music.audio.render_wav`, time- and size-limited) into
`<out>/audio/` and embed the first `CHUNK_SECONDS` of each render with a LAION-CLAP model (`laion-clap`,
installed by the user: it is not a CI dependency). CLAP score: mean cosine similarity x 100 between each
prompt's text embedding and its generation's audio embedding, as MIDI-LLM reports it. FAD: the Frechet
distance between the CLAP audio embeddings of the generated and the reference renders, the quantity
`fadtk` computes with its `clap-laion-music` model; `fadtk` itself is used when installed, through its
Frechet routine, because its model loaders download weights and nothing here may. Nothing is downloaded:
without a local checkpoint the metrics are skipped with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CHUNK_SECONDS = 20.0


def _clap(checkpoint: Path):
    try:
        import laion_clap
    except ImportError as e:
        raise RuntimeError("laion-clap is not installed (pip install laion-clap; not part of midilm[all])") from e
    # music checkpoints use the HTSAT-base audio tower; the general 630k ones HTSAT-tiny
    amodel = "HTSAT-base" if "music" in checkpoint.name else "HTSAT-tiny"
    model = laion_clap.CLAP_Module(enable_fusion="fusion" in checkpoint.name, amodel=amodel)
    model.load_ckpt(str(checkpoint))
    return model


def _render_all(midi_paths: list[Path], out_dir: Path) -> list[Path]:
    from midilm.music.audio import render_wav
    from midilm.music.midi_io import read_midi

    out_dir.mkdir(parents=True, exist_ok=True)
    wavs = []
    for p in midi_paths:
        piece = read_midi(p)
        piece = piece.clip_seconds(0.0, CHUNK_SECONDS) if piece.duration > CHUNK_SECONDS else piece
        wavs.append(render_wav(piece, out_dir / f"{p.stem}.wav"))
    return wavs


def audio_metrics(midi_dir: str | Path, prompts: list[dict], reference_dir: str | Path | None,
                  clap_model: str | Path | None = None, fad_model: str | Path | None = None,
                  out_dir: str | Path | None = None) -> dict:
    """{"clap": ..., "fad": ..., "notes": [...]}: each metric a number or None with the reason in notes.
    Generated files are `midi_dir/<id>.mid`; renders go to `out_dir/audio/` (default: midi_dir)."""
    out = Path(out_dir or midi_dir)
    gen = Path(midi_dir)
    result: dict = {"clap": None, "fad": None, "notes": []}
    paths = [gen / f"{p['id']}.mid" for p in prompts if (gen / f"{p['id']}.mid").is_file()]
    models, loaded = {}, {}
    for name, ckpt in (("clap", clap_model), ("fad", fad_model)):
        if not ckpt:
            result["notes"].append(f"{name} skipped: no model file given")
            continue
        if not Path(ckpt).is_file():
            result["notes"].append(f"{name} skipped: {ckpt} is not a file")
            continue
        try:
            key = str(Path(ckpt).resolve())
            loaded[key] = loaded.get(key) or _clap(Path(ckpt))  # one load when both use the same file
            models[name] = loaded[key]
        except Exception as e:  # a user's model that does not load must not lose the symbolic results
            result["notes"].append(f"{name} skipped: the model did not load ({e})")
    if not models:
        return result
    gen_wavs = _render_all(paths, out / "audio" / "generated")
    if "clap" in models:
        m = models["clap"]
        audio = np.asarray(m.get_audio_embedding_from_filelist(x=[str(w) for w in gen_wavs], use_tensor=False))
        texts = {p["id"]: p["prompt"] for p in prompts}
        text = np.asarray(m.get_text_embedding([texts[w.stem] for w in gen_wavs], use_tensor=False))
        cos = (audio * text).sum(1) / (np.linalg.norm(audio, axis=1) * np.linalg.norm(text, axis=1))
        result["clap"] = float(100 * cos.mean())
        result["clap_model"] = str(clap_model)
    if "fad" in models:
        if reference_dir is None:
            result["notes"].append("fad skipped: needs --reference DIR")
        else:
            refs = [Path(reference_dir) / f"{p.stem}.mid" for p in paths]
            refs = [r for r in refs if r.is_file()]
            ref_wavs = _render_all(refs, out / "audio" / "reference")
            m = models["fad"]
            g = np.asarray(m.get_audio_embedding_from_filelist(x=[str(w) for w in gen_wavs], use_tensor=False))
            r = np.asarray(m.get_audio_embedding_from_filelist(x=[str(w) for w in ref_wavs], use_tensor=False))
            result["fad"] = _frechet(g, r)
            result["fad_model"] = str(fad_model)
    (out / "audio" / "audio_metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    try:
        from fadtk.fad import calc_frechet_distance
    except ImportError:
        from midilm.evaluate.metrics import frechet_distance

        return frechet_distance(a, b)
    return float(calc_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))

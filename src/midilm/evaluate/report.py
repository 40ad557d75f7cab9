"""Turn an evaluation's report.json into something to look at: plots, `report.md` and a self-contained
`index.html` (inline CSS, images as files beside it) in the evaluation's output folder.

Text-to-MIDI: headline metrics, set metrics against the references, pitch-class histograms (generated vs
reference), tempo-bin and key confusion matrices (target vs measured from the notes), feature
distributions, piano rolls of a few samples and the model's loss curve when its folder has
`loss_history.json`. Understanding: text metrics, factual accuracy per question type as a chart, and a
few clips with their piano roll, caption and answers. Both pages are built from one list of blocks, so the
Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from midilm.evaluate.metrics import TEMPO_EDGES, parse_key, tempo_bin
from midilm.evaluate.sets import DISTRIBUTION_FEATURES

TEMPO_NAMES = ("Grave", "Largo", "Adagio", "Andante", "Moderato", "Allegro", "Vivace", "Presto", "Prestissimo")
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
KEY_NAMES = tuple(f"{n} major" for n in PC_NAMES) + tuple(f"{n} minor" for n in PC_NAMES)
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{margin-top:1.6em;border-bottom:1px solid #eee}table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
figure{margin:1em 0}figcaption{color:#666;font-size:.9em}.note{color:#775;background:#fffbe8;padding:.4em .7em;
border-left:3px solid #e6c200}code{background:#f4f4f4;padding:0 .2em}"""


# ------------------------------------------------------------------------------------------ page building

def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def render_markdown(title: str, blocks: list[tuple]) -> str:
    lines = [f"# {title}", ""]
    for b in blocks:
        kind = b[0]
        if kind == "h2":
            lines += [f"## {b[1]}", ""]
        elif kind in ("p", "note"):
            lines += [("> " if kind == "note" else "") + b[1], ""]
        elif kind == "table":
            head, rows = b[1], b[2]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |"
                      for r in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(lines)


def render_html(title: str, blocks: list[tuple]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
             f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{CSS}</style></head>",
             f"<body><h1>{e(title)}</h1>"]
    for b in blocks:
        kind = b[0]
        if kind == "h2":
            parts.append(f"<h2>{e(b[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif kind == "note":
            parts.append(f"<p class=\"note\">{e(b[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            parts.append(f"<figure><img src=\"{e(b[1])}\" alt=\"{e(b[2])}\"><figcaption>{e(b[2])}</figcaption>"
                         "</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_pages(out: Path, title: str, blocks: list[tuple]) -> Path:
    (out / "report.md").write_text(render_markdown(title, blocks) + "\n", encoding="utf-8")
    index = out / "index.html"
    index.write_text(render_html(title, blocks) + "\n", encoding="utf-8")
    return index


# ------------------------------------------------------------------------------------------------ plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pitch_classes(generated: list[float], reference: list[float] | None, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(12)
    width = 0.4 if reference is not None else 0.7
    ax.bar(x - (width / 2 if reference is not None else 0), generated, width, label="generated", color="#3b75af")
    if reference is not None:
        ax.bar(x + width / 2, reference, width, label="reference", color="#e08a2c")
    ax.set_xticks(x, PC_NAMES)
    ax.set_ylabel("share of pitched notes")
    ax.set_title("Pitch-class histogram (mean over pieces)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    plt = _plt()
    n = len(labels)
    size = 3.2 + 0.22 * n
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues", vmin=0)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7 if n > 12 else 8)
    ax.set_yticks(range(n), labels, fontsize=7 if n > 12 else 8)
    for i, j in zip(*np.nonzero(matrix)):
        ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6 if n > 12 else 8,
                color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tempo_confusion(items: list[dict]) -> np.ndarray:
    m = np.zeros((len(TEMPO_EDGES) + 1,) * 2, dtype=int)
    for it in items:
        if it.get("target_bpm") and it.get("bpm"):
            m[tempo_bin(float(it["target_bpm"])), tempo_bin(float(it["bpm"]))] += 1
    return m


def key_index(key: str | None) -> int | None:
    parsed = parse_key(key)
    return None if parsed is None else parsed[0] + (12 if parsed[1] == "minor" else 0)


def key_confusion(items: list[dict]) -> np.ndarray:
    m = np.zeros((24, 24), dtype=int)
    for it in items:
        t, p = key_index(it.get("target_key")), key_index(it.get("key"))
        if t is not None and p is not None:
            m[t, p] += 1
    return m


def plot_distributions(generated: list[dict], reference: list[dict] | None, keys: list[str], path: Path) -> Path:
    plt = _plt()
    cols = 3
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3 * rows))
    for ax, k in zip(np.ravel(axes), keys):
        g = [it[k] for it in generated if it.get(k) is not None]
        r = [it[k] for it in reference or [] if it.get(k) is not None]
        values = g + r
        if values:
            bins = np.linspace(min(values), max(values) + 1e-9, 15)
            ax.hist(g, bins=bins, alpha=0.6, density=True, label="generated", color="#3b75af")
            if r:
                ax.hist(r, bins=bins, alpha=0.6, density=True, label="reference", color="#e08a2c")
        ax.set_title(k.replace("_", " "), fontsize=10)
        ax.legend(fontsize=7)
    for ax in np.ravel(axes)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss_history(model_dir: str | Path | None, path: Path) -> Path | None:
    """The model's training loss curve, when its folder has loss_history.json."""
    if not model_dir:
        return None
    hist_file = Path(model_dir) / "loss_history.json"
    if not hist_file.is_file():
        return None
    history = [h for h in json.loads(hist_file.read_text()) if isinstance(h, dict) and "loss" in h and "step" in h]
    if not history:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    offset = 0
    for stage in dict.fromkeys(str(h.get("stage", "training")) for h in history):
        pts = [(h["step"], h["loss"]) for h in history if str(h.get("stage", "training")) == stage]
        xs, ys = zip(*pts)
        ax.plot([x + offset for x in xs], ys, label=stage)  # stages one after another on one step axis
        offset += max(xs)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Training loss of {Path(model_dir).name}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(accuracy: dict, path: Path) -> Path:
    plt = _plt()
    types = list(accuracy)
    values = [accuracy[t]["accuracy"] for t in types]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(types) + 1.2))
    y = np.arange(len(types))
    ax.barh(y, values, color="#3b75af")
    ax.set_yticks(y, [f"{t} (n={accuracy[t]['n']})" for t in types], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("factual accuracy")
    for yi, v in zip(y, values):
        ax.text(min(v + 0.01, 0.93), yi, f"{v:.2f}", va="center", fontsize=7)
    ax.set_title("Factual accuracy per question type")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- text-to-MIDI page

def write_generation_report(report: dict, out_dir: str | Path, model_dir: str | Path | None = None,
                            samples: int = 4, midi_dir: str | Path | None = None) -> Path:
    """Plots, report.md and index.html for `midilm eval generate`; returns the index path. The samples'
    piano rolls come from `midi_dir/<id>.mid` (default: the output folder)."""
    from midilm.errors import MidilmError
    from midilm.music.midi_io import read_midi
    from midilm.music.pianoroll import pianoroll_png

    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    s, items, sets = report["summary"], report["items"], report.get("sets", {})
    mode = "unconditioned baseline" if report.get("unconditioned") else "conditioned on the prompts"
    blocks: list[tuple] = [("p", f"{s['n']} prompts; model {report.get('model') or '-'}; references "
                                 f"{report.get('reference') or 'none'}; {mode}."),
                           ("p", "Key and tempo are measured from the generated notes (key classifier, onset tempo "
                                 "estimate), never read from the tempo or key events the generator wrote.")]
    blocks += [("h2", "Prompt adherence"), ("table", ["metric", "value (%)", "n"], [
        ["TB (tempo bin)", pct(s.get("tb")), s.get("tb_n", "-")],
        ["TBT (tempo bin or a neighbour)", pct(s.get("tbt")), s.get("tbt_n", "-")],
        ["CK (key)", pct(s.get("ck")), s.get("ck_n", "-")],
        ["CKD (key or relative key)", pct(s.get("ckd")), s.get("ckd_n", "-")],
        ["instrument precision", pct(s.get("instrument_precision")), s.get("instrument_precision_n", "-")],
        ["instrument recall", pct(s.get("instrument_recall")), s.get("instrument_recall_n", "-")],
        ["valid (decoded without repairs, not empty)", pct(s.get("valid")), s["n"]],
    ])]
    gen = sets.get("generated", {})
    ref = sets.get("reference")
    dist = sets.get("distributions", {})
    rows = []
    for k, label in (("pitch_class_entropy", "pitch-class entropy (bits)"), ("scale_consistency", "scale consistency"),
                     ("groove_consistency", "groove consistency"), ("polyphony", "polyphony (sounding notes)"),
                     ("note_density", "note density (notes/s)"), ("compression_ratio", "compression ratio (COSIATEC)")):
        g = gen.get(k, {})
        r = (ref or {}).get(k, {})
        rows.append([label, f"{fmt(g.get('mean'))} ± {fmt(g.get('std'))}",
                     f"{fmt(r.get('mean'))} ± {fmt(r.get('std'))}" if ref else "-",
                     fmt(dist.get(k, {}).get("overlap_area"))])
    blocks += [("h2", "Musical features against the reference set"),
               ("table", ["feature", "generated (mean ± sd)", "reference (mean ± sd)", "overlapping area"], rows)]
    if sets.get("note"):
        blocks.append(("note", sets["note"]))
    frechet_rows = []
    for k, label in (("frechet_symbolic", "symbolic feature vectors (standardised)"),
                     ("frechet_encoder", "MIDI encoder embeddings")):
        f = sets.get(k)
        if f is not None:
            frechet_rows.append([label, fmt(f.get("value")), f.get("dimensions", "-"), f.get("note", "")])
    audio = sets.get("audio", {})
    if audio:
        for key, label in (("fad", "FAD (CLAP audio embeddings)"), ("clap", "CLAP score (x100)")):
            note = "; ".join(n for n in audio.get("notes", []) if n.startswith(key)) or audio.get("note", "")
            frechet_rows.append([label, fmt(audio.get(key)), "-", note])
    if frechet_rows:
        blocks += [("h2", "Frechet distances and audio metrics"),
                   ("table", ["measure", "value", "dimensions", "note"], frechet_rows)]
    blocks.append(("h2", "Plots"))
    pc = plot_pitch_classes(gen.get("pitch_class_histogram", [0.0] * 12),
                            ref.get("pitch_class_histogram") if ref else None, plots / "pitch_classes.png")
    blocks.append(("img", f"plots/{pc.name}", "Pitch-class histograms, generated vs reference"))
    tc = tempo_confusion(items)
    if tc.sum():
        p = plot_confusion(tc, list(TEMPO_NAMES), plots / "tempo_confusion.png", "Tempo bin: target vs measured",
                           "measured from the notes", "target")
        blocks.append(("img", f"plots/{p.name}", "Tempo-bin confusion matrix"))
    kc = key_confusion(items)
    if kc.sum():
        p = plot_confusion(kc, list(KEY_NAMES), plots / "key_confusion.png", "Key: target vs measured",
                           "measured from the notes", "target")
        blocks.append(("img", f"plots/{p.name}", "Key confusion matrix"))
    if items and "polyphony" in items[0]:
        p = plot_distributions(items, sets.get("reference_items"), list(DISTRIBUTION_FEATURES),
                               plots / "distributions.png")
        blocks.append(("img", f"plots/{p.name}", "Feature distributions" + (", generated vs reference" if ref else "")))
    loss = plot_loss_history(model_dir, plots / "loss.png")
    if loss:
        blocks.append(("img", f"plots/{loss.name}", "Training loss of the evaluated model"))
    shown = 0
    for it in items:
        if shown >= samples:
            break
        try:
            piece = read_midi(Path(midi_dir or out) / f"{it['id']}.mid")
        except MidilmError:
            continue
        name = f"pianoroll_{shown}.png"
        pianoroll_png(piece, plots / name, title=it["id"], max_seconds=30.0, height=3.6)
        caption = (f"{it['id']}: key {it.get('key')} (target {it.get('target_key')}), "
                   f"{fmt(it.get('bpm'), 1)} bpm (target {fmt(it.get('target_bpm'), 1)})")
        blocks.append(("img", f"plots/{name}", caption))
        shown += 1
    blocks += [("h2", "Items"), ("table", ["id", "key", "target key", "CK", "CKD", "bpm", "target bpm", "TB", "TBT",
                                           "instruments", "recall", "valid"],
                                 [[it["id"], fmt(it.get("key")), fmt(it.get("target_key")), fmt(it.get("ck")),
                                   fmt(it.get("ckd")), fmt(it.get("bpm"), 1), fmt(it.get("target_bpm"), 1),
                                   fmt(it.get("tb")), fmt(it.get("tbt")), ", ".join(it.get("instruments") or []),
                                   fmt(it.get("instrument_recall"), 2), fmt(it.get("valid"))] for it in items])]
    return write_pages(out, "Text-to-MIDI evaluation", blocks)


# ------------------------------------------------------------------------------------ understanding page

def write_understanding_report(report: dict, out_dir: str | Path, samples: int = 3,
                               model_dir: str | Path | None = None) -> Path:
    """Plots, report.md and index.html for `midilm eval understand`; returns the index path."""
    from midilm.errors import MidilmError
    from midilm.evaluate.understanding import row_piece
    from midilm.music.pianoroll import pianoroll_png

    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    s = report["summary"]
    blocks: list[tuple] = [("p", f"Model: {report.get('model')}. {s['rows']} rows ({s['pieces']} whole pieces, "
                                 f"{s['clips']} clips of 20 s), {s['questions']} questions, {s['failed_rows']} rows "
                                 "unreadable.")]
    rows = []
    for task in ("captioning", "qa"):
        t = s[task]
        rows.append([task, t["n"], fmt(t.get("bleu4"), 4), fmt(t.get("meteor"), 4), fmt(t.get("rouge_l"), 4),
                     fmt(t.get("bertscore"), 4)])
    blocks += [("h2", "Text metrics (MIDI-LLaMA's)"),
               ("table", ["task", "n", "BLEU-4", "METEOR", "ROUGE-L", "BERTScore F1"], rows)]
    for note in dict.fromkeys(s["captioning"].get("notes", []) + s["qa"].get("notes", [])):
        blocks.append(("note", note))
    blocks.append(("p", "BERTScore uses a local MiniLM (all 6 layers, no rescaling), not the model of the paper: "
                        "compare BERTScores only between runs of this tool."))
    acc = report.get("accuracy_by_type", {})
    blocks += [("h2", "Factual accuracy per question type"),
               ("p", f"All questions: {pct(s.get('factual_accuracy'))} %; mean over the core musical types: "
                     f"{pct(s.get('factual_accuracy_core_types'))} %."),
               ("table", ["type", "accuracy (%)", "short answers (%)", "long answers (%)", "n"],
                [[t, pct(a["accuracy"]), pct(a.get("short")), pct(a.get("long")), a["n"]] for t, a in acc.items()])]
    facts = s.get("caption_facts") or {}
    if facts.get("captions"):
        blocks += [("h2", "Facts stated in captions"),
                   ("p", f"Caption factual precision {pct(facts.get('precision'))} % (stated facts that agree with "
                         f"the analysis; {fmt(facts.get('facts_per_caption'), 2)} a caption, "
                         f"{facts.get('captions_without_facts')} captions state none); "
                         f"{fmt(facts.get('words_mean'), 1)} words a caption on average."),
                   ("table", ["fact", "precision (%)", "n"],
                    [[t, pct(v["precision"]), v["n"]] for t, v in facts.get("by_type", {}).items()])]
    if acc:
        p = plot_accuracy(acc, plots / "accuracy_by_type.png")
        blocks.append(("img", f"plots/{p.name}", "Factual accuracy per question type"))
    loss = plot_loss_history(model_dir, plots / "loss.png")
    if loss:
        blocks.append(("img", f"plots/{loss.name}", "Training loss of the evaluated model"))
    records = []
    pred_file = out / "predictions.jsonl"
    if pred_file.is_file():
        with open(pred_file, encoding="utf-8") as f:
            for line in f:
                records.append(json.loads(line))
                if len(records) >= samples:
                    break
    if records:
        blocks.append(("h2", "Samples"))
    for k, r in enumerate(records):
        where = f"{r['path']}" + (f" ({r['clip']} clip, {r['clip_start']:.1f}-{r['clip_end']:.1f} s)"
                                  if r.get("unit") == "clip" else "")
        blocks.append(("p", where))
        try:
            piece = row_piece(r)
            name = f"sample_{k}.png"
            pianoroll_png(piece, plots / name, title=Path(r["path"]).name, height=3.2)
            blocks.append(("img", f"plots/{name}", "Piano roll of the notes the model read"))
        except MidilmError:
            pass
        blocks.append(("table", ["", "text"], [["model caption", r["caption"]],
                                               *[["reference caption", c] for c in r["captions"][:2]]]))
        blocks.append(("table", ["type", "question", "model answer", "reference", "correct"],
                       [[q["type"], q["question"], q["prediction"], q["reference"], fmt(q["correct"])]
                        for q in r["qa"][:8]]))
    return write_pages(out, "MIDI understanding evaluation", blocks)

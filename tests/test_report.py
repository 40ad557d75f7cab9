"""Report pages of `midilm eval generate`: plots, Markdown and an HTML index whose images all exist, built
from real held-out POP909 songs standing in for another system's generations (`--midi`, no model needed)."""

from __future__ import annotations

import re
import shutil

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

from midilm.evaluate.generation import evaluate_files  # noqa: E402
from midilm.evaluate.report import key_confusion, render_html, tempo_confusion, write_generation_report  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


def test_generation_report_pages(tmp_path):
    from midilm.generate.cli import default_model_path

    root = shared_path("pop909", "POP909")
    gen, out, refs = tmp_path / "gen", tmp_path / "eval", tmp_path / "refs"
    gen.mkdir()
    refs.mkdir()
    prompts = []
    for k, (g, r) in enumerate((("010", "020"), ("030", "040"))):
        shutil.copyfile(root / g / f"{g}.mid", gen / f"s{k}.mid")
        shutil.copyfile(root / r / f"{r}.mid", refs / f"s{k}.mid")
        prompts.append({"id": f"s{k}", "prompt": "A pop song for piano in C major at 100 bpm."})
    prompts.append({"id": "absent", "prompt": "Nothing was generated for this one."})
    # another system's outputs: existing files are scored like our generations
    report = evaluate_files(prompts, gen, out, reference_dir=refs, progress=False)
    assert report["summary"]["valid"] == pytest.approx(2 / 3)  # the missing file counts as invalid
    assert report["sets"]["missing_references"] == ["absent"] and report["sets"]["n_reference"] == 2
    assert report["items"][0]["target_key"] == "C major" and report["items"][0]["target_bpm"] == 100.0
    model_dir = default_model_path()
    index = write_generation_report(report, out, model_dir=model_dir if model_dir.is_dir() else None, samples=2,
                                    midi_dir=gen)
    html = index.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"plots/pitch_classes.png", "plots/tempo_confusion.png", "plots/key_confusion.png",
            "plots/distributions.png", "plots/pianoroll_0.png", "plots/pianoroll_1.png"} <= set(images)
    if model_dir.is_dir():
        assert "plots/loss.png" in images
    assert all((out / i).is_file() and (out / i).stat().st_size > 5000 for i in images)
    md = (out / "report.md").read_text()
    assert "| CKD (key or relative key) |" in md and "compression ratio (COSIATEC)" in md
    assert md.count("![") == len(images)
    assert "<script" not in html and "http" not in html.split("<body>")[0]  # self-contained: no remote assets


def test_confusion_counts_and_escaping():
    items = [{"target_key": "A minor", "key": "C major", "target_bpm": 120, "bpm": 65},
             {"target_key": "nonsense", "key": "C major", "target_bpm": None, "bpm": 90}]
    kc, tc = key_confusion(items), tempo_confusion(items)
    assert kc.sum() == 1 and kc[12 + 9, 0] == 1  # A minor row, C major column
    assert tc.sum() == 1 and tc[5, 2] == 1  # Allegro target, Adagio measured
    page = render_html("t <x>", [("p", "a < b & c"), ("table", ["h"], [["<td>"]])])
    assert "a &lt; b &amp; c" in page and "&lt;td&gt;" in page and "<x>" not in page

"""`midilm eval understand` end to end on real held-out POP909 songs with the analysis answerer (the
ceiling): a real dataset built by the annotation pipeline, clips cut from the notes, text metrics,
accuracy per question type, report files; plus the question classifier on every dataset paraphrase."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from midilm.annotate.questions import QUESTIONS
from midilm.evaluate.understanding import AnalysisAnswerer, PriorAnswerer, question_type, row_piece
from tests.conftest import shared_path

pytest.importorskip("pyarrow")
pytest.importorskip("sacrebleu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from midilm.annotate import dataset as ds
    from midilm.annotate.sources import SourceItem

    root = shared_path("pop909", "POP909")
    out = tmp_path_factory.mktemp("dataset")
    # POP909 songs whose number is divisible by 10 are held out; 011 is a training song (for the prior)
    items = [SourceItem(str(root / n / f"{n}.mid"), "pop909", {"genre": "pop"}, split, "MIT")
             for n, split in (("010", "test"), ("090", "test"), ("011", "train"))]
    ds.build_dataset([items], out, workers=1, progress=False)
    return out


def test_every_dataset_paraphrase_is_classified():
    for qtype, phrasings in QUESTIONS.items():
        for q in phrasings:
            assert question_type(q) == qtype, q
            assert question_type("Describe in detail: " + q) == qtype
    assert question_type("Roughly how many beats per minute?") == "tempo"
    assert question_type("zzz") is None


def test_analysis_answerer_answers_from_the_notes(dataset):
    from midilm.annotate.dataset import load_rows
    from midilm.annotate.questions import answer_is_correct

    rows = load_rows(dataset, "test")
    clip = next(r for r in rows if r["unit"] == "clip" and r["clip"] == "middle")
    piece = row_piece(clip)
    assert piece.start.min() < 5.0 and piece.duration < clip["clip_end"] - clip["clip_start"] + 5
    answerer = AnalysisAnswerer()
    key = answerer.ask(piece, "What key is this piece in?")
    assert answer_is_correct("key", key, clip), (key, clip["key"])
    assert answer_is_correct("instruments", answerer.ask(piece, "Which instruments are playing?"), clip)
    assert "cannot tell" in answerer.ask(piece, "Who composed this piece?")
    assert answerer.describe(piece) == answerer.describe_many([piece])[0]


def test_eval_understand_end_to_end(dataset, tmp_path):
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "eval", "understand", "--data", str(dataset), "--out",
                        str(out), "--model", "analysis", "--limit", "5", "--no-bertscore",
                        "--types", "key,mode,tempo,meter,instruments,texture,genre"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert s["rows"] == 5 and s["questions"] == 5 * 7 * 2 and s["failed_rows"] == 0  # short + long per type
    for task in ("captioning", "qa"):
        assert 0 < s[task]["bleu4"] <= 1 and 0 < s[task]["rouge_l"] <= 1
        assert s[task]["bertscore"] is None and any("skipped" in n for n in s[task]["notes"])
    acc = report["accuracy_by_type"]
    assert set(acc) == {"key", "mode", "tempo", "meter", "instruments", "texture", "genre"}
    assert s["factual_accuracy_core_types"] > 0.8  # the ceiling reads what the dataset was built from
    assert acc["genre"]["accuracy"] == 0.0  # metadata is not in the notes
    facts = s["caption_facts"]
    # the analysis answerer's captions state facts of its own analysis of the notes, which is what the rows hold
    assert facts["captions"] == 5 and facts["facts_per_caption"] >= 1 and facts["precision"] >= 0.9
    assert facts["words_mean"] > 5 and set(facts["by_type"]) <= {"key", "mode", "tempo", "meter", "instruments",
                                                                  "texture", "dynamics"}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 5 and all(p["caption"] and p["qa"] for p in preds)
    assert all(p["caption_facts"]["words"] > 0 and "facts" in p["caption_facts"] for p in preds)
    html = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert "plots/accuracy_by_type.png" in images and len(images) >= 2
    assert all((out / i).is_file() for i in images)
    md = (out / "report.md").read_text()
    assert re.search(r"^\| key \| \d+\.\d \|", md, re.MULTILINE) and "Caption factual precision" in md


def test_bad_input_is_one_line_error(tmp_path, dataset, capsys):
    from midilm.cli import main

    out = str(tmp_path / "o")
    assert main(["eval", "understand", "--data", str(tmp_path), "--out", out, "--model", "analysis"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("midilm: error:") and "not a midilm dataset" in err and err.count("\n") == 1
    assert main(["eval", "understand", "--data", str(dataset), "--out", out, "--model", "analysis",
                 "--types", "key,nonsense"]) == 1
    assert "unknown question type(s) for --types: nonsense" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prior_answerer_ignores_the_notes(dataset):
    from midilm.annotate.dataset import load_rows

    train = load_rows(dataset, "train")
    prior = PriorAnswerer(dataset)
    key_answers = [q["answer"] for r in train for q in r["qa"] if q["type"] == "key" and q["style"] == "short"]
    answer = prior.ask(None, "What key is this piece in?")
    assert answer in key_answers  # the most common training answer, whatever the piece
    assert prior.ask_many([None, None], ["What key is this piece in?"] * 2) == [answer, answer]
    assert prior.describe(None) in {c for r in train for c in r["captions"]}

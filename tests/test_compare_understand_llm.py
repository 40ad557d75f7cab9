"""benchmarks/compare_understand_llm.py: the CPU-budget stop (a scripted clock: exact, no timing), the validation
probes kept off the bill, and a toy end-to-end run (three Nottingham tunes, a 32-wide encoder and LLM) that
trains both stages under a budget, evaluates with the project's evaluation and fills the comparison table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.conftest import shared_path  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_understand_llm.py"


@pytest.fixture(scope="module")
def cmp():
    spec = importlib.util.spec_from_file_location("compare_understand_llm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    """Stands in for the process CPU clock: it moves only when the test moves it."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class State:
    global_step = 0


class Control:
    should_training_stop = False


def test_budget_stops_at_the_budget_and_probes_are_not_charged(cmp, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(cmp, "cpu_seconds", clock)

    class Probe:
        batches = ["ready"]
        calls = 0

        def __call__(self, model):
            Probe.calls += 1
            clock.now += 7.0  # a probe's CPU time: excluded from the budget
            return 1.0 / Probe.calls

    info: dict = {}
    cb = cmp.budget_callback(10.0, Probe(), (0.0, 0.5, 1.0), offset=3.0, info=info)
    state, control = State(), Control()
    cb.on_train_begin(None, state, control, model=None)
    assert Probe.calls == 1 and info["curve"] == [(3.0, 1.0)]  # the starting point, at the stage's offset
    steps = 0
    while not control.should_training_stop:
        clock.now += 1.0  # each step costs one CPU second
        steps += 1
        state.global_step = steps
        cb.on_step_end(None, state, control, model=None)
        assert steps < 50
    cb.on_train_end(None, state, control, model=None)
    # 10 charged seconds buy exactly 10 steps although the three probes spent 21 more
    assert steps == 10 and info["charged_cpu_s"] == 10.0 and info["excluded_cpu_s"] == 21.0
    assert [x for x, _ in info["curve"]] == [3.0, 8.0, 13.0]  # at 0, half and all of the budget, after the offset
    assert Probe.calls == 3


def test_schedule_is_refitted_to_the_steps_the_budget_buys(cmp, monkeypatch):
    from transformers.optimization import get_cosine_schedule_with_warmup

    clock = Clock()
    monkeypatch.setattr(cmp, "cpu_seconds", clock)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, 1, 100_000)  # the ceiling the recipe passes as `steps`

    class Trainer:
        lr_scheduler = sched

    info: dict = {}
    cb = cmp.budget_callback(40.0, info=info)
    cb.trainer = Trainer()
    state, control = State(), Control()
    cb.on_train_begin(None, state, control, model=None)
    lrs = []
    while not control.should_training_stop:
        clock.now += 2.0
        state.global_step += 1
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
        cb.on_step_end(None, state, control, model=None)
    assert info["target_steps"] == 20 and state.global_step == 20 and info["cpu_per_step"] == 2.0
    # the cosine now ends with the budget: without the refit the rate would still be ~1.0 at the last step
    assert lrs[-1] < 0.05 < max(lrs)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A three-tune dataset, a tiny encoder and a 2-step stage-0 LLM."""
    from midilm.annotate.dataset import build_dataset
    from midilm.annotate.sources import folder
    from midilm.models.encoder import MusicBertConfig, MusicBertModel
    from midilm.train.understand import UnderstandConfig, train_understand

    root = tmp_path_factory.mktemp("toy")
    midi = root / "midi"
    midi.mkdir()
    for p in sorted(shared_path("nottingham", "MIDI").glob("reels*.mid"))[:3]:
        (midi / p.name).write_bytes(p.read_bytes())
    build_dataset([folder(midi)], root / "ds", workers=1, progress=False)
    torch.manual_seed(0)
    MusicBertModel(MusicBertConfig.tiny(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_notes=64)).save_pretrained(root / "enc")
    llm = train_understand(UnderstandConfig(
        data=str(root / "ds"), output=str(root / "llm0"), stage=0, steps=2, batch_size=2, logging_steps=1,
        save_steps=1000, text_vocab=400, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, text_max_len=64))
    return root, llm


def test_toy_run_trains_within_budget_and_fills_the_table(cmp, toy, tmp_path):
    root, llm = toy
    out = tmp_path / "runs"
    info = cmp.run_candidate("toy", str(llm), out, budget=4.0, stage1_share=0.25, data=str(root / "ds"),
                             encoder=str(root / "enc"), val_rows=4, val_split="train", probes=2, max_rows=50,
                             batch_size=2, max_len=160)  # room for the answers after the toy BPE prompt
    saved = json.loads((out / "toy" / "train.json").read_text())
    assert saved["charged_cpu_s"] == info["charged_cpu_s"]
    for stage in ("stage1", "stage2"):
        assert 0 < saved[stage]["steps"] < 100_000  # stopped by the budget, far below the steps ceiling
        assert saved[stage]["tokens"] > 0 and saved[stage]["train_loss"]
    # stage 2 gets what stage 1 left of the budget
    assert saved["stage2"]["budget_cpu_s"] == pytest.approx(4.0 - saved["stage1"]["charged_cpu_s"])
    curve = saved["curve"]
    assert len(curve) == 4 and all(a[0] <= b[0] for a, b in zip(curve, curve[1:]))  # 2 in stage 1, 2 in stage 2
    assert all(loss > 0 for _, loss in curve)
    for stage in ("s1", "s2"):
        assert (out / "toy" / stage / "midilm.json").is_file()

    ev = cmp.evaluate_candidate(out / "toy" / "s2", out / "toy" / "eval", data=str(root / "ds"), limit=2,
                                split="train", latency_pieces=1)
    assert ev["rows"] == 2 and ev["questions"] > 0 and set(ev["accuracy"]) <= set(cmp.EVAL_TYPES)
    assert (out / "toy" / "eval" / "report.json").is_file() and ev["answer_cpu_s"] > 0

    # a reference evaluated on the same rows but not trained here (the blind prior) gets a row without training
    prior = cmp.evaluate_candidate("prior", out / "prior" / "eval", data=str(root / "ds"), limit=2, split="train")
    assert prior["questions"] == ev["questions"] and prior["answer_cpu_s"] is None

    runs = cmp.load_runs(out, ["toy", "prior"])
    rows = cmp.table_rows(runs)
    assert len(rows) == 2 and all(len(r) == len(cmp.COLUMNS) for r in rows) and rows[0][0] == "toy"
    assert rows[0][5] == f"{100 * ev['factual_accuracy']:.1f}" and rows[0][1] and rows[0][2]
    assert rows[1][1:5] == ["", "", "", ""] and rows[1][5] == f"{100 * prior['factual_accuracy']:.1f}"
    md = cmp.markdown_table(runs).splitlines()
    assert len(md) == 4 and md[0].count("|") == md[2].count("|") == md[3].count("|") == len(cmp.COLUMNS) + 1
    cmp.plot_curves(runs, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0

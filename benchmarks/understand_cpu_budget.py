"""One `midilm train understand` stage under a budget of process CPU seconds (equal-CPU comparisons of base LLMs).

    python benchmarks/understand_cpu_budget.py CONFIG.json CPU_SECONDS [BUDGET_FILE]

CONFIG.json holds `midilm.train.understand.UnderstandConfig` fields (the CLI flags with underscores). The
stage runs as `midilm train understand` would; a Trainer callback counts the process's CPU time (user +
system, all threads) from the first training step, so loading and the cached encoder features are not
charged. After 3 timed steps the cosine schedule is re-fitted to the number of steps the budget buys at that
pace; training stops at that step or when the budget is spent, whichever comes first (on a busy machine
steps get dearer, so the budget usually decides). BUDGET_FILE, when given, holds the budget and is re-read
every step, so a comparison can be shortened while it runs. Writes OUTPUT/budget.json (steps, CPU seconds
per step, CPU seconds spent). Run the models with the same thread count (OMP_NUM_THREADS=1) and budget.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from functools import partial

import midilm.train.understand as tu


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str]) -> dict:
    from transformers import TrainerCallback
    from transformers.optimization import _get_cosine_schedule_with_warmup_lr_lambda

    config = json.loads(open(argv[0]).read())
    budget = [float(argv[1])]
    budget_file = argv[2] if len(argv) > 2 else None
    info: dict = {"budget_cpu_s": budget[0]}

    def current_budget() -> float:
        try:
            return float(open(budget_file).read()) if budget_file else budget[0]
        except (OSError, ValueError):
            return budget[0]

    class Budget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.t1, self.target = cpu_seconds(), None, None

        def on_step_end(self, args, state, control, **kw):
            budget[0] = current_budget()
            used = cpu_seconds() - self.t0
            if state.global_step == 1:
                self.t1 = cpu_seconds()
            if state.global_step == 4 and self.target is None:
                per = (cpu_seconds() - self.t1) / 3
                self.target = max(5, int(4 + (budget[0] - used) / per))
                schedule = getattr(kw["lr_scheduler"], "scheduler", kw["lr_scheduler"])
                schedule.lr_lambdas = [partial(_get_cosine_schedule_with_warmup_lr_lambda,
                                               num_warmup_steps=max(int(0.03 * self.target), 1),
                                               num_training_steps=self.target, num_cycles=0.5)
                                       for _ in schedule.lr_lambdas]  # one per parameter group
                info.update(cpu_per_step=per, target_steps=self.target)
            if (self.target and state.global_step >= self.target) or used >= budget[0]:
                control.should_training_stop = True
            info.update(steps=state.global_step, train_cpu_s=used, budget_cpu_s=budget[0])

    start = time.time()
    out = tu.train_understand(tu.UnderstandConfig(**config), callbacks=[Budget()])
    info.update(wall_s=time.time() - start, cpu_total_s=cpu_seconds())
    (out / "budget.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

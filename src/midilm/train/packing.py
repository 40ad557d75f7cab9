"""Packed training rows shared by the recipes: whole examples side by side, each with its own positions.

A row of `max_len` ids holds one or more whole examples; an example that does not fit in what is left of
a row starts the next one (the rest is padding, never a target), so every example begins with its own
prompt. Each example's `position_ids` restart at 0: with no attention mask, transformers reads those
resets as sequence boundaries and lets no example attend to another (`masking_utils`' packed-sequence
mask; flash-attention does the same from the positions), and rotary positions start afresh. The first
id of an example is never a target (it would be predicted from the previous example).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

IGNORE = -100
log = logging.getLogger(__name__)


class SkipExample(Exception):
    """An example maker gives up on one example (the reason is counted and warned about, never silent)."""


class PackedStream:
    """An endless stream of rows {input_ids, labels, position_ids} of length max_len from an example maker.

    `make_example(rng)` returns (ids, labels) or raises SkipExample; `skipped` counts the reasons."""

    MAX_SKIPS_IN_A_ROW = 1000

    def __init__(self, make_example: Callable, max_len: int, pad_id: int, seed: int):
        self.make_example, self.max_len, self.pad_id, self.seed = make_example, max_len, pad_id, seed
        self.skipped: Counter[str] = Counter()

    def _example(self, rng: random.Random) -> tuple[list[int], list[int]]:
        for _ in range(self.MAX_SKIPS_IN_A_ROW):
            try:
                ids, labels = self.make_example(rng)
            except SkipExample as e:
                reason = str(e) or "skipped"
                self.skipped[reason] += 1
                n = self.skipped[reason]
                if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: visible without flooding the log
                    log.warning("skipped %d training example(s) so far: %s", n, reason)
                continue
            if ids:
                return ids[: self.max_len], labels[: self.max_len]
        raise RuntimeError(f"{self.MAX_SKIPS_IN_A_ROW} training examples in a row were skipped: "
                           f"{dict(self.skipped)}")

    def _row(self, ids: list[int], labels: list[int], pos: list[int]) -> dict:
        return make_row(ids, labels, pos, self.max_len, self.pad_id)

    def __iter__(self):
        import torch

        worker = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed + (worker.id if worker else 0))
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        while True:
            x, y = self._example(rng)
            if len(ids) + len(x) > self.max_len:
                yield self._row(ids, labels, pos)
                ids, labels, pos = [], [], []
            ids += x
            labels += [IGNORE] + list(y[1:])
            pos += range(len(x))
            if len(ids) == self.max_len:
                yield self._row(ids, labels, pos)
                ids, labels, pos = [], [], []


class MixedStream:
    """Rows drawn from several row streams, each row from stream i with probability weights[i]: examples of
    different lengths mix by whole rows, so a short example never leaves a row of padding before a long one."""

    def __init__(self, streams: list[tuple[PackedStream, float]], seed: int):
        if not streams or any(w < 0 for _, w in streams) or sum(w for _, w in streams) <= 0:
            raise ValueError("MixedStream needs streams with non-negative weights that sum above 0")
        self.streams, self.seed = streams, seed
        self.max_len = streams[0][0].max_len

    @property
    def skipped(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s, _ in self.streams:
            total.update(s.skipped)
        return total

    def __iter__(self):
        import torch

        worker = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed + (worker.id if worker else 0))
        rows = [iter(s) for s, _ in self.streams]
        weights = [w for _, w in self.streams]
        while True:
            yield next(rng.choices(rows, weights)[0])


RowStream = PackedStream | MixedStream  # what a Trainer's training set is built from


def make_row(ids: list[int], labels: list[int], pos: list[int], max_len: int, pad_id: int) -> dict:
    """One row of tensors, padded to max_len (padding: its own positions, never a target)."""
    import torch

    pad = max_len - len(ids)
    return {"input_ids": torch.tensor(ids + [pad_id] * pad), "labels": torch.tensor(labels + [IGNORE] * pad),
            "position_ids": torch.tensor(pos + list(range(pad)))}


def single_rows(examples, max_len: int, pad_id: int) -> list[dict]:
    """One padded row per (ids, labels) example: a fixed evaluation set."""
    rows = []
    for ids, labels in examples:
        ids, labels = ids[:max_len], labels[:max_len]
        rows.append(make_row(ids, [IGNORE] + list(labels[1:]), list(range(len(ids))), max_len, pad_id))
    return rows


def iterable_dataset(stream: RowStream):
    """A torch IterableDataset over a PackedStream (what the Trainer takes)."""
    import torch

    class _Rows(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(stream)

    return _Rows()


def collate_rows(rows: list[dict]) -> dict:
    """Stack packed rows into a batch."""
    import torch

    return {key: torch.stack([r[key] for r in rows]) for key in rows[0]}

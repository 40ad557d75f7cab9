"""Data parallelism and gradient accumulation through the real `midilm train t2m` path, on the CPU.

Two processes (torchrun, gloo) x batch 2 must give the weights of one process x batch 4, and 2 accumulated
micro-batches of 2 the weights of one batch of 4: the loss is normalised by the target count of the whole
global batch, and the packed rows hold different numbers of targets, so a per-micro-batch or per-process
mean would weigh targets unequally and move the weights elsewhere. Plain SGD without clipping keeps the
weights proportional to the gradients (Adam's first steps and clipping would hide a scale error). One
process x batch 2 is the control: it must differ beyond the tolerance.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tests.conftest import REPO, shared_path  # noqa: E402

SMALL = dict(text_vocab=300, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, max_len=128, stage1_steps=2,
             stage2_steps=2, lr=0.05, optim="sgd", max_grad_norm=0.0, weight_decay=0.0, logging_steps=1,
             save_steps=1000, seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from midilm.annotate.dataset import build_dataset
    from midilm.annotate.sources import folder

    root = tmp_path_factory.mktemp("dist")
    midi = root / "midi"
    midi.mkdir()
    for p in sorted(shared_path("nottingham", "MIDI").glob("reels*.mid"))[:4]:
        (midi / p.name).write_bytes(p.read_bytes())
    build_dataset([folder(midi)], root / "ds", workers=1, progress=False)
    return root / "ds"


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _single(dataset: Path, out: Path, batch: int, accum: int) -> dict:
    from midilm.train.t2m import T2MConfig, train_t2m

    train_t2m(T2MConfig(data=str(dataset), output=str(out), batch_size=batch, grad_accum=accum, **SMALL))
    return _weights(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a: dict, b: dict) -> bool:
    # the all-reduce and the split batches sum the same terms in another order: float rounding only
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_two_processes_and_accumulation_equal_one_big_batch(dataset, tmp_path):
    args = []
    for name, value in SMALL.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "midilm.cli", "train", "t2m", "--data", str(dataset),
           "-o", str(tmp_path / "ddp"), "--batch-size", "2", *args]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]

    ddp = _weights(tmp_path / "ddp")
    big = _single(dataset, tmp_path / "big", batch=4, accum=1)
    accum = _single(dataset, tmp_path / "accum", batch=2, accum=2)
    small = _single(dataset, tmp_path / "small", batch=2, accum=1)
    assert _close(ddp, big), "2 processes x batch 2 differ from 1 process x batch 4"
    assert _close(accum, big), "2 accumulated micro-batches of 2 differ from one batch of 4"
    assert not _close(small, big)  # the tolerance can tell a different global batch apart

"""GGUF conversion of the shipped model: metadata, tensors (rotary reordering), cache keys, the export CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from midilm.generate.cli import default_model_path  # noqa: E402
from midilm.models.gguf import _unrotate, cached_gguf, export_gguf, llama3_rope_factors, output_matrix  # noqa: E402

MODEL = default_model_path()
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="no default model shipped in this checkout")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_gguf(MODEL, tmp_path_factory.mktemp("gguf") / "tiny.gguf", "f32")


def test_metadata_and_tensors_match_the_checkpoint(exported):
    from transformers import AutoModelForCausalLM

    reader = gguf.GGUFReader(str(exported))
    fields = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    cfg = json.loads((MODEL / "config.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == cfg["num_hidden_layers"]
    assert fields["llama.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert fields["llama.vocab_size"] == cfg["vocab_size"] == len(fields["tokenizer.ggml.tokens"])
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[0] == "<|begin_of_text|>" and tokens[2048] == "<|amt_0|>" and tokens[-1] == "<|amt_55029|>"
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses the token embedding
    hf = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).state_dict()
    np.testing.assert_array_equal(output_matrix(exported), hf["model.embed_tokens.weight"].numpy())
    q = np.asarray(tensors["blk.1.attn_q.weight"].data).reshape(hf["model.layers.1.self_attn.q_proj.weight"].shape)
    k = np.asarray(tensors["blk.1.attn_k.weight"].data).reshape(hf["model.layers.1.self_attn.k_proj.weight"].shape)
    np.testing.assert_array_equal(q, _unrotate(hf["model.layers.1.self_attn.q_proj.weight"].numpy(), 4))
    np.testing.assert_array_equal(k, _unrotate(hf["model.layers.1.self_attn.k_proj.weight"].numpy(), 2))


def test_unrotate_interleaves_each_heads_halves():
    w = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads of 4 rows: halves (0,1|2,3) and (4,5|6,7)
    assert _unrotate(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_llama3_rope_factors_keep_high_and_slow_low_frequencies():
    f = llama3_rope_factors(64, 500000.0, {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 8192})
    assert f.shape == (32,) and f[0] == 1.0 and f[-1] == 32.0 and np.all(np.diff(f) >= 0)


def test_cache_is_keyed_by_the_model(tmp_path):
    a = cached_gguf(MODEL, "q8_0", tmp_path)
    mtime = a.stat().st_mtime_ns
    assert cached_gguf(MODEL, "q8_0", tmp_path) == a and a.stat().st_mtime_ns == mtime  # not converted again
    assert a.stat().st_size < MODEL.joinpath("model.safetensors").stat().st_size * 1.3
    changed = tmp_path / "changed"
    shutil.copytree(MODEL, changed)
    meta = json.loads((changed / "config.json").read_text())
    meta["rms_norm_eps"] = 1e-5
    (changed / "config.json").write_text(json.dumps(meta))
    b = cached_gguf(changed, "q8_0", tmp_path)
    assert b != a and b.exists() and not list(tmp_path.glob("*.part"))


def test_export_cli(tmp_path, capsys):
    from midilm.cli import main

    out = tmp_path / "m.gguf"
    assert main(["export", "gguf", str(MODEL), "-o", str(out), "--type", "f16"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert gguf.GGUFReader(str(out)).fields["general.file_type"].contents() == 1
    assert main(["export", "gguf", str(tmp_path), "-o", str(tmp_path / "x.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "safetensors" in err and not (tmp_path / "x.gguf").exists()
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "export", "gguf", str(MODEL), "-o", str(tmp_path / "y")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "should end in .gguf" in r.stderr and not (tmp_path / "y").exists()

"""The model manifest (`midilm.json`) and where a checkpoint's music block is located."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from midilm.models.manifest import FORMAT_VERSION, ManifestError, read_manifest, write_manifest
from midilm.models.vocab import MusicLayout, layout_for


def test_manifest_round_trip_and_kind_check(tmp_path):
    write_manifest(tmp_path, "midi-llama", llm_hidden=256)
    data = read_manifest(tmp_path, expected_kind="midi-llama")
    assert data == {"kind": "midi-llama", "format_version": FORMAT_VERSION, "llm_hidden": 256}
    with pytest.raises(ManifestError, match="not 'text-to-midi'"):
        read_manifest(tmp_path, expected_kind="text-to-midi")
    with pytest.raises(ManifestError, match="no midilm.json"):
        read_manifest(tmp_path / "missing")


def test_legacy_t2m_sidecar_reads_as_text_to_midi(tmp_path):
    legacy = {"music_offset": 2048, "music_rows": 55030, "prompt_prefix": "Compose: ", "bos_text": ""}
    (tmp_path / "midilm.json").write_text(json.dumps(legacy))
    data = read_manifest(tmp_path, expected_kind="text-to-midi")
    assert data["kind"] == "text-to-midi" and data["format_version"] == 0
    assert layout_for(tmp_path) == MusicLayout(2048, prompt_prefix="Compose: ")


def test_layout_save_writes_versioned_manifest(tmp_path):
    layout = MusicLayout(4096)
    layout.save(tmp_path)
    data = json.loads((tmp_path / "midilm.json").read_text())
    assert data["kind"] == "text-to-midi" and data["format_version"] == FORMAT_VERSION
    assert {k: data[k] for k in asdict(layout)} == asdict(layout)
    assert layout_for(tmp_path) == layout


def test_bad_manifests_are_refused(tmp_path):
    (tmp_path / "midilm.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(ManifestError, match="needs a \"kind\""):
        read_manifest(tmp_path)
    (tmp_path / "midilm.json").write_text(json.dumps({"kind": "text-to-midi", "format_version": 99}))
    with pytest.raises(ManifestError, match="newer"):
        read_manifest(tmp_path)
    (tmp_path / "midilm.json").write_text("{not json")
    with pytest.raises(ManifestError, match="JSON"):
        read_manifest(tmp_path)


def test_midi_llm_release_is_recognised_only_with_its_tokenizer(tmp_path):
    from midilm.models.vocab import LayoutError

    assert layout_for(tmp_path, vocab_size=183286, tokenizer_len=128256) == MusicLayout(128256)
    # a padded checkpoint, a plain text LM, or the right size with another tokenizer: nothing is guessed
    for rows, tok in ((183296, 128256), (60000, 2048), (183286, 300), (183286, None)):
        with pytest.raises(LayoutError, match="cannot tell where the music ids start"):
            layout_for(tmp_path, vocab_size=rows, tokenizer_len=tok)


def test_a_manifest_that_does_not_fit_the_model_is_refused(tmp_path):
    from midilm.models.vocab import LayoutError

    MusicLayout(4096).save(tmp_path)
    assert layout_for(tmp_path, vocab_size=4096 + 55030).music_offset == 4096
    with pytest.raises(LayoutError, match="only 30000 vocabulary rows"):
        layout_for(tmp_path, vocab_size=30000)

"""Dataset builder: source adapters (held-out split rules, labels), and builds on a handful of real files
(dedupe, corrupt files, resume, Parquet round trip through `datasets`, Ray).

Adapter tests need only ../shared/data. Build tests also need the annotation modules (analyze, captions,
questions) and skip with a reason while those are missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from midilm.annotate import dataset as ds
from midilm.annotate import sources as S
from tests.conftest import shared_path

_MISSING = [m for m in ds.ANNOTATE_MODULES if importlib.util.find_spec(m) is None]
needs_annotators = pytest.mark.skipif(
    bool(_MISSING), reason=f"annotation modules not available yet: {', '.join(_MISSING)}")


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- helpers

def test_normalize_key_uses_project_spelling():
    assert S.normalize_key("Gb:maj") == "F# major"
    assert S.normalize_key("A#:min") == "Bb minor"
    assert S.normalize_key("Am") == "A minor"
    assert S.normalize_key("Bb") == "Bb major"
    assert S.normalize_key("F#m") == "F# minor"
    assert S.normalize_key("") is None and S.normalize_key("N") is None


def test_era_from_years():
    assert S.era_from_years(1685, 1750) == "Baroque"
    assert S.era_from_years(1756, 1791) == "Classical"
    assert S.era_from_years(1810, 1849) == "Romantic"
    assert S.era_from_years(1875, 1937) == "20th century"
    assert S.era_from_years(1525, 1594) == "Renaissance"
    assert S.era_from_years(1957, None) == "Contemporary"
    assert S.era_from_years(None, 1750) == "Baroque"
    assert S.era_from_years(None, None) is None


def test_split_rules():
    # music21: SHA-1 of the corpus-relative path with forward slashes
    for p in ("bach/bwv66.6.mxl", "essenFolksong/han1.abc"):
        want = "test" if hashlib.sha1(p.encode()).hexdigest()[-1] == "0" else "train"
        assert S.music21_split(p) == want
    assert S.music21_split("bach\\bwv66.6.mxl") == S.music21_split("bach/bwv66.6.mxl")
    assert S.lakh_split("lmd_full/f/f" + "0" * 31 + ".mid") == "test"
    assert S.lakh_split("lmd_full/d/d" + "0" * 31 + ".mid") == "train"
    assert S.content_split("ab0") == "test" and S.content_split("ab1") == "train"


# ---------------------------------------------------------------------------------------------- adapters

def test_pop909_split_and_labels():
    items = list(S.pop909(shared_path("pop909")))
    assert len(items) == 909
    test_ids = {int(it.metadata["song_id"]) for it in items if it.split == "test"}
    assert test_ids == set(range(10, 910, 10))
    first = items[0]
    assert Path(first.path).name == "001.mid" and first.split == "train" and first.license == "MIT"
    meta = first.metadata
    assert meta["title"] == "123我爱你" and meta["artist"] == "新乐尘符"
    assert meta["label_key"] == "F# major"  # key_audio.txt says Gb:maj
    assert meta["label_meter"] == "2/4"
    assert meta["label_chords"][0]["label"] == "N" and any(c["label"] == "B:maj" for c in meta["label_chords"])
    beat_lines = [x for x in (Path(first.path).parent / "beat_midi.txt").read_text().split("\n") if x.strip()]
    assert len(meta["label_beats"]) == len(beat_lines) and 0 < len(meta["label_downbeats"]) < len(meta["label_beats"])


def test_nottingham_split_and_index():
    items = list(S.nottingham(shared_path("nottingham")))
    assert len(items) == 1034
    assert [i for i, it in enumerate(items) if it.split == "test"] == list(range(0, 1034, 10))
    first = items[0]
    assert first.path.endswith("MIDI/ashover1.mid") and Path(first.path).exists()
    assert first.metadata["title"] == "A and A's Waltz"
    assert first.metadata["label_key"] == "G major" and first.metadata["label_meter"] == "3/4"
    assert first.license == "GPL-3.0"
    assert {it.metadata["tune_type"] for it in items} >= {"jig", "reel", "hornpipe", "waltz"}


def test_music21_split_and_conversion_cache(tmp_path):
    pytest.importorskip("music21")
    items = list(S.music21_corpus("bach", cache_dir=tmp_path))
    assert len(items) > 400
    assert all(it.metadata["corpus_path"].startswith("bach/") for it in items)
    for it in items:
        assert it.split == S.music21_split(it.metadata["corpus_path"])
    assert 0 < sum(it.split == "test" for it in items) < len(items) // 5
    item = next(it for it in items if it.metadata["corpus_path"] == "bach/bwv66.6.mxl")
    assert item.metadata["era"] == "Baroque"
    assert not Path(item.path).exists()
    path = S.ensure_midi(item)
    assert path == Path(item.path) and path.is_relative_to(tmp_path)
    from midilm.music.midi_io import read_midi

    assert len(read_midi(path)) > 100
    stamp = path.stat().st_mtime_ns
    S.ensure_midi(item)  # cached: not converted again
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(S.TimeLimitExceeded):
        S.convert_music21("bach/bwv66.6.mxl", None, tmp_path / "slow.mid", timeout=0.001)
    assert not (tmp_path / "slow.mid").exists()
    # in the builder the limit covers the whole file, conversion included, and is reported, not raised
    other = next(it for it in items if it.metadata["corpus_path"] == "bach/bwv1.6.mxl")
    res = ds.process_item(other, timeout=0.001)
    assert res["stage"] == "convert" and res["error"].startswith("TimeLimitExceeded")


def test_music21_opus_works_are_numbered():
    pytest.importorskip("music21")
    items = list(S.music21_corpus("airds"))
    assert len(items) > 1000
    # whole-file Opus entries are left out; each tune of the file is its own work
    assert all(it.metadata["music21_number"] for it in items)
    assert len({it.path for it in items}) == len(items)


def _giantmidi_folder(tmp_path: Path) -> Path:
    one = shared_path("fixtures", "MIDIs_one_track")
    folder = tmp_path / "giantmidi"
    folder.mkdir()
    names = {"Maestro_1.mid": "Chopin, Frédéric, Nocturne in E-flat major, Op.9 No.2, 9E6b3swbnWg.mid",
             "Maestro_3.mid": "Bach, Johann Sebastian, Prelude in C major, BWV 846, frgOJ0fWVJw.mid"}
    for src, name in names.items():
        shutil.copy(one / src, folder / name)
    shutil.copy(one / "Maestro_9.mid", folder / "Nobody, Some, Piece, zzzzzzzzzzz.mid")
    return folder


def test_giantmidi_adapter(tmp_path):
    composers = shared_path("giantmidi-meta", "composers_manually_checked.csv")
    folder = _giantmidi_folder(tmp_path)
    items = {it.metadata["youtube_id"]: it for it in S.giantmidi(folder, composers)}
    chopin = items["9E6b3swbnWg"].metadata
    assert chopin["composer"] == "Frédéric Chopin" and chopin["nationality"] == "Polish"
    assert (chopin["birth"], chopin["death"], chopin["era"]) == (1810, 1849, "Romantic")
    assert chopin["title"] == "Nocturne in E-flat major, Op.9 No.2"
    assert items["frgOJ0fWVJw"].metadata["era"] == "Baroque"
    unknown = items["zzzzzzzzzzz"].metadata
    assert unknown["composer"] == "Some Nobody" and unknown["era"] is None and unknown["nationality"] is None
    for it in items.values():
        assert it.split == S.content_split(_sha1(Path(it.path))) and it.license == "CC-BY-4.0"


def _lakh_layout(tmp_path: Path, fmt: str = "jsonl") -> tuple[Path, Path, str]:
    multi = shared_path("fixtures", "MIDIs_multitrack")
    root = tmp_path / "lmd_full"
    (root / "d").mkdir(parents=True)
    (root / "f").mkdir()
    train_md5, test_md5 = "d6caebd1964d9e4a3c5ea59525230e2a", "f" + "1" * 31
    shutil.copy(multi / f"{train_md5}.mid", root / "d" / f"{train_md5}.mid")
    shutil.copy(multi / "Funkytown.mid", root / "f" / f"{test_md5}.mid")
    caption = "A funky dance track with bass and drums."
    recs = [{"location": f"lmd_full/d/{train_md5}.mid", "caption": caption,
             "genre": "[['electronic', 'pop'], [0.3, 0.2]]", "mood": ['happy', 'energetic']},
            {"location": f"lmd_full/f/{test_md5}.mid", "caption": "Another song."}]
    captions = tmp_path / f"captions.{fmt}"
    if fmt == "jsonl":
        captions.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    elif fmt == "json":
        captions.write_text(json.dumps(recs))
    else:
        captions.write_text("location,caption\n" + "".join(f"{r['location']},\"{r['caption']}\"\n" for r in recs))
    return root, captions, caption


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_lakh_midicaps_adapter(tmp_path, fmt):
    root, captions, caption = _lakh_layout(tmp_path, fmt)
    items = {Path(it.path).stem: it for it in S.lakh_midicaps(root, captions)}
    train = items["d6caebd1964d9e4a3c5ea59525230e2a"]
    test = items["f" + "1" * 31]
    assert (train.split, test.split) == ("train", "test")
    assert train.metadata["midicaps_caption"] == caption
    if fmt == "jsonl":
        assert train.metadata["genre"] == "electronic" and train.metadata["mood"] == ["happy", "energetic"]


def test_folder_split_by_content(tmp_path):
    src = shared_path("fixtures", "MIDIs_multitrack")
    items = list(S.folder(src, name="pop"))
    assert len(items) == 12
    for it in items:
        assert it.source == "pop" and it.split == S.content_split(_sha1(Path(it.path)))


def test_sources_from_args(tmp_path):
    data = shared_path()
    root, captions, _ = _lakh_layout(tmp_path)
    specs = [f"pop909:{data / 'pop909'}", f"nottingham:{data / 'nottingham'}", "music21", "music21:essen",
             f"giantmidi:{_giantmidi_folder(tmp_path)},{data / 'giantmidi-meta' / 'composers_manually_checked.csv'}",
             f"lakh:{root},{captions}", f"lakh:{root}", str(data / "fixtures" / "MIDIs_one_track"),
             f"folder:{data / 'fixtures' / 'misc'}"]
    got = S.sources_from_args(specs)
    assert [s.name for s in got] == ["pop909", "nottingham", "music21", "music21", "giantmidi", "lakh", "lakh",
                                     "MIDIs_one_track", "misc"]
    assert next(iter(got[4])).metadata.get("composer")
    with pytest.raises(FileNotFoundError):
        S.sources_from_args([str(tmp_path / "nowhere")])
    with pytest.raises(ValueError):
        S.sources_from_args(["pop909:"])


def test_process_item_reports_bad_files_without_raising(tmp_path):
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    res = ds.process_item(S.SourceItem(str(bad), "x", {}, "train", "MIT"))
    assert res["stage"] == "read" and "MidiReadError" in res["error"] and "\n" not in res["error"]
    res = ds.process_item(S.SourceItem(str(tmp_path / "missing.mid"), "x", {}, "train", "MIT"))
    assert res["stage"] == "read" and "no such file" in res["error"]


# ---------------------------------------------------------------------------------------------- Parquet

def test_parquet_round_trip_of_mixed_values(tmp_path):
    """The assembly step alone: column kinds merged over rows, nested values as JSON, lists as lists."""
    datasets = pytest.importorskip("datasets")
    rows = [
        {"source": "s", "split": "train", "path": "a.mid", "content_hash": "h1", "license": "MIT",
         "unit": "piece", "clip": "", "clip_start": 0.0, "clip_end": 10.0, "captions": ["c"],
         "qa": [{"question": "q", "answer": "a", "type": "key", "style": "short"}],
         "bpm": 120, "chords": [{"start": 0, "end": 1.5, "label": "C:maj"}], "instruments": ["Piano"],
         "beats": [0, 0.5], "odd": "x", "flag": True},
        {"source": "s", "split": "train", "path": "a.mid", "content_hash": "h1", "license": "MIT",
         "unit": "clip", "clip": "start", "clip_start": 0.0, "clip_end": 10.0, "captions": [], "qa": [],
         "bpm": 97.5, "chords": [], "instruments": [], "beats": None, "odd": 3, "flag": None},
    ]
    (tmp_path / "parts").mkdir()
    with open(tmp_path / "parts" / "part-00000.jsonl", "w") as f:
        f.write(json.dumps({"path": "a.mid", "source": "s", "content_hash": "h1", "rows": rows}) + "\n")
        f.write('{"path": "torn')  # a killed run's last line
    summary = ds._assemble(tmp_path, progress=False)
    assert set(summary["json_columns"]) == {"chords", "odd"}
    assert summary["pieces"] == 1 and summary["clips"] == 1 and summary["qa_pairs"] == 1
    # a split without rows gets no file: datasets refuses empty data files
    assert not (tmp_path / "test.parquet").exists() and list(summary["data_files"]) == ["train"]
    loaded = datasets.load_dataset("parquet", data_files=summary["data_files"])
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 2
    assert datasets.load_dataset(str(tmp_path))["train"].num_rows == 2  # through the card's configs
    r0, r1 = loaded["train"][0], loaded["train"][1]
    assert r0["bpm"] == 120.0 and r1["bpm"] == 97.5
    assert json.loads(r0["chords"]) == rows[0]["chords"] and json.loads(r1["chords"]) == []
    assert r0["beats"] == [0.0, 0.5] and r1["beats"] is None
    assert json.loads(r0["odd"]) == "x" and json.loads(r1["odd"]) == 3
    assert r0["qa"] == rows[0]["qa"] and r1["qa"] == [] and r0["flag"] is True
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert ds.load_rows(tmp_path)[0]["chords"] == rows[0]["chords"]


def _relpath_test(rel: str) -> bool:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[-1] == "0"


def test_groove_split_and_labels():
    items = list(S.groove(shared_path("groove")))
    assert len(items) == 1150 and all(Path(it.path).exists() for it in items)
    # the dataset's own test rows are held out; its validation rows are ordinary training files here
    assert sum(it.split == "test" for it in items) == 129
    assert {it.metadata["groove_split"] for it in items if it.split == "train"} == {"train", "validation"}
    first = items[0]
    assert first.path.endswith("drummer1/eval_session/1_funk-groove1_138_beat_4-4.mid")
    assert first.metadata["genre"] == "funk" and first.metadata["label_bpm"] == 138
    assert first.metadata["label_meter"] == "4/4" and first.metadata["tune_type"] == "groove"
    assert first.license.startswith("CC-BY-4.0")
    genres = {it.metadata["genre"] for it in items}
    assert {"rock", "jazz", "hip hop", "Afro-Cuban", "New Orleans"} <= genres and "hiphop" not in genres
    assert {it.metadata["tune_type"] for it in items} == {"groove", "drum fill"}


def test_freedoom_credits_split_and_remixes():
    root = shared_path("freedoom")
    credits = S.read_freedoom_credits(root / "CREDITS-MUSIC")
    assert credits["d_e1m1.mid"] == {"title": "Steel and Brass", "composer": "J.Astartes and Mr795", "derived": False}
    # nicknames dropped; the current E1M1, not the one "Previously Featured"
    assert credits["d_e1m2.mid"]["composer"] == "Mark McGill-Smith"
    assert credits["d_map11.mid"]["derived"] and credits["d_intro.mid"]["derived"]  # remix of / based on
    assert credits["d_fdmttl.mid"]["title"] == "My Home, The Colosseum"
    assert sum(c["derived"] for c in credits.values()) == 13
    items = list(S.freedoom(root))
    names = {Path(it.path).name for it in items}
    assert "dummy.mid" not in names and "d_map11.mid" not in names and "d_e1m1.mid" in names
    assert len(items) == 112 - 1 - 13
    assert len(list(S.freedoom(root, include_derived=True))) == 111
    for it in items:
        rel = Path(it.path).relative_to(root).as_posix()
        assert it.split == ("test" if _relpath_test(rel) else "train") and it.metadata["relpath"] == rel
    assert 0 < sum(it.split == "test" for it in items) < len(items) // 4
    e1m1 = next(it for it in items if it.path.endswith("d_e1m1.mid"))
    assert e1m1.metadata["title"] == "Steel and Brass" and e1m1.license.startswith("BSD-3-Clause")


def test_openmsx_themes_and_split():
    root = shared_path("openmsx")
    items = list(S.openmsx(root))
    assert len(items) == 31
    by_name = {Path(it.path).name: it for it in items}
    boogie = by_name["boogi_marabi_redfarn.mid"].metadata
    assert boogie["title"] == "Boogie Marabi" and boogie["composer"] == "Jim Redfarn"
    assert boogie["genre"] == "boogie-woogie" and boogie["playlist"] == "Ezy Street"
    assert by_name["city_blues_redfarn.mid"].metadata["genre"] == "blues"
    assert by_name["tttheme2.mid"].metadata["composer"] == "lucas"  # "-lucas-" in themes.list
    for it in items:
        assert it.split == ("test" if _relpath_test(Path(it.path).relative_to(root).as_posix()) else "train")


def test_openscore_quartets_metadata_split_and_conversion(tmp_path):
    pytest.importorskip("music21")
    root = shared_path("openscore-quartets")
    items = list(S.openscore_quartets(root, cache_dir=tmp_path))
    assert len(items) == 122
    for it in items:
        rel = it.metadata["relpath"]
        assert rel.startswith("scores/") and rel.endswith(".mxl") and (root / rel).exists()
        assert it.split == ("test" if _relpath_test(rel) else "train")
        assert it.metadata["tune_type"] == "string quartet" and it.license.startswith("CC0")
    arriaga = next(it for it in items if "Arriaga" in it.path and "No.3" in it.path).metadata
    assert arriaga["composer"] == "Juan Crisóstomo de Arriaga"
    assert arriaga["title"] == "String Quartet No.3 in E-flat Major" and arriaga["label_key"] == "Eb major"
    assert S.key_from_title("String Quartet No.1 in D minor") == "D minor"
    assert S.key_from_title("String Quartet in F-sharp minor, Op.2") == "F# minor"
    assert S.key_from_title("String Quartet") is None
    # the smallest score, converted once into the cache and read back as four string parts
    small = min(items, key=lambda it: (root / it.metadata["relpath"]).stat().st_size)
    assert not Path(small.path).exists()
    path = S.ensure_midi(small, timeout=300)
    assert path == Path(small.path) and path.is_relative_to(tmp_path)
    from midilm.music.midi_io import read_midi

    piece = read_midi(path)
    assert len(piece) > 100 and len(set(piece.track.tolist())) >= 4


def test_sources_from_args_new_kinds():
    specs = [f"{k}:{shared_path(k)}" for k in ("groove", "freedoom", "openmsx", "openscore-quartets")]
    names = [s.name for s in S.sources_from_args(specs)]
    assert names == ["groove", "freedoom", "openmsx", "openscore-quartets"]


def test_validation_split_is_carved_from_train_by_content_hash():
    digests = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(4000)]
    chosen = [d for d in digests if ds.validation_split(d)]
    assert 150 < len(chosen) < 350  # 1 in 16
    # independent of the held-out rule on the same hash's last digit
    assert any(d.endswith("0") for d in chosen) and any(not d.endswith("0") for d in chosen)
    d = chosen[0]
    assert ds.final_split({"split": "train", "content_hash": d}) == "validation"
    assert ds.final_split({"split": "test", "content_hash": d}) == "test"
    other = next(x for x in digests if not ds.validation_split(x))
    assert ds.final_split({"split": "train", "content_hash": other}) == "train"


# ---------------------------------------------------------------------------------------------- builds

def _rows(out: Path) -> list[dict]:
    import datasets

    files = json.loads((out / "summary.json").read_text())["data_files"]
    dd = datasets.load_dataset("parquet", data_files=files)
    return [row for split in dd.values() for row in split]


@needs_annotators
def test_build_split_dedupe_errors_resume(tmp_path):
    datasets = pytest.importorskip("datasets")
    notts = shared_path("nottingham")
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(notts / "MIDI" / "ashover2.mid", extra / "copy_of_ashover2.mid")  # a duplicate by content
    shutil.copy(shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid"), extra / "bad.mid")
    out = tmp_path / "out"
    sources = [S.nottingham(notts), S.folder(extra, name="extra")]

    summary = ds.build_dataset(sources, out, workers=2, limit=2, progress=False)
    assert summary["pieces"] == 2 and summary["duplicates"] == 1 and summary["failures"] == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == [str(extra / "bad.mid")] and errors[0]["reason"]
    assert json.loads((out / "duplicates.jsonl").read_text())["kept"].endswith("MIDI/ashover2.mid")
    assert json.loads((out / "summary.json").read_text())["pieces"] == 2
    assert (out / "README.md").read_text().startswith("---\nconfigs:")

    rows = _rows(out)
    assert len(rows) == summary["rows"] == summary["pieces"] + summary["clips"]
    pieces = [r for r in rows if r["unit"] == "piece"]
    assert sorted(Path(r["path"]).name for r in pieces) == ["ashover1.mid", "ashover2.mid"]
    for r in rows:
        name = Path(r["path"]).name
        # Nottingham row 0 (ashover1) is held out, row 1 is not
        assert r["split"] == ("test" if name == "ashover1.mid" else "train")
        assert r["content_hash"] == _sha1(notts / "MIDI" / name)
        assert r["source"] == "nottingham" and r["license"] == "GPL-3.0"
        assert r["captions"] and all(isinstance(c, str) and c for c in r["captions"])
        assert all(set(q) == set(ds.QA_FIELDS) for q in r["qa"])
        assert r["clip"] in ("", "start", "middle", "end")
        assert (r["clip"] == "") == (r["unit"] == "piece") and r["clip_end"] >= r["clip_start"]
    clips = [r for r in rows if r["unit"] == "clip" and r["path"] == pieces[0]["path"]]
    assert 1 <= len(clips) <= 3
    assert summary["qa_pairs"] == sum(len(r["qa"]) for r in rows)
    assert datasets.Dataset.from_parquet(str(out / "test.parquet")).num_rows == sum(
        r["split"] == "test" for r in rows)
    assert summary["sources"]["nottingham"]["test"]["pieces"] == 1

    # a second run finds everything done (and the bad file already reported)
    again = ds.build_dataset(sources, out, workers=2, limit=2, progress=False)
    assert again["processed_this_run"] == 0 and again["skipped_done"] == 2 and again["skipped_failed"] == 1
    assert again["rows"] == summary["rows"] and again["failures"] == 1

    # a run killed while writing: the last file is not in done.txt and its part line is torn
    done = (out / "done.txt").read_text().splitlines()
    (out / "done.txt").write_text("\n".join(done[:-1]) + "\n")
    with open(sorted((out / "parts").glob("part-*.jsonl"))[-1], "a") as f:
        f.write('{"path": "half a li')
    resumed = ds.build_dataset(sources, out, workers=2, limit=2, progress=False)
    assert resumed["processed_this_run"] == 1 and resumed["skipped_done"] == 1
    assert resumed["rows"] == summary["rows"] and len(_rows(out)) == summary["rows"]

    fresh = ds.build_dataset(sources, out, workers=1, limit=2, resume=False, progress=False)
    assert fresh["processed_this_run"] == 2 and fresh["rows"] == summary["rows"]


@needs_annotators
def test_build_lakh_keeps_midicaps_caption_first(tmp_path):
    pytest.importorskip("datasets")
    root, captions, caption = _lakh_layout(tmp_path)
    summary = ds.build_dataset([S.lakh_midicaps(root, captions)], tmp_path / "out", workers=1, progress=False)
    assert summary["pieces"] == 2
    rows = _rows(tmp_path / "out")
    piece = next(r for r in rows if r["unit"] == "piece" and "d6caebd" in r["path"])
    assert piece["captions"][0] == caption and len(piece["captions"]) > 1 and piece["split"] == "train"
    assert all(caption not in r["captions"] for r in rows if r["unit"] == "clip")
    assert {r["split"] for r in rows if Path(r["path"]).name.startswith("f")} == {"test"}


@needs_annotators
def test_build_music21_work(tmp_path):
    pytest.importorskip("music21")
    items = [it for it in S.music21_corpus("bach", cache_dir=tmp_path / "cache")
             if it.metadata["corpus_path"] == "bach/bwv66.6.mxl"]
    summary = ds.build_dataset([items], tmp_path / "out", workers=1, progress=False)
    assert summary["pieces"] == 1 and summary["failures"] == 0
    assert (tmp_path / "cache" / "bach" / "bwv66.6.mxl.mid").exists()
    row = next(r for r in _rows(tmp_path / "out") if r["unit"] == "piece")
    assert row["corpus_path"] == "bach/bwv66.6.mxl" and row["source"] == "music21"
    assert row["split"] == S.music21_split("bach/bwv66.6.mxl")


@needs_annotators
def test_build_on_ray_gives_the_same_rows(tmp_path):
    pytest.importorskip("ray")
    sources = [S.nottingham(shared_path("nottingham"))]
    serial = ds.build_dataset(sources, tmp_path / "serial", workers=1, limit=2, progress=False)
    on_ray = ds.build_dataset(sources, tmp_path / "ray", workers=2, limit=2, ray=True, progress=False)
    assert on_ray["backend"] == "ray" and on_ray["rows"] == serial["rows"]
    key = lambda r: (r["path"], r["clip"])  # noqa: E731
    assert sorted(_rows(tmp_path / "ray"), key=key) == sorted(_rows(tmp_path / "serial"), key=key)


@needs_annotators
def test_build_writes_a_stable_validation_split(tmp_path):
    pytest.importorskip("datasets")
    notts = shared_path("nottingham")
    items = list(S.nottingham(notts))
    digests = {it.path: _sha1(Path(it.path)) for it in items[:200]}
    val = [it for it in items[:200] if it.split == "train" and ds.validation_split(digests[it.path])]
    train = [it for it in items[:200] if it.split == "train" and not ds.validation_split(digests[it.path])]
    test = [it for it in items[:200] if it.split == "test"]
    assert val and train and test
    chosen = [val[0], train[0], test[0]]
    summary = ds.build_dataset([chosen], tmp_path / "out", workers=1, progress=False)
    assert set(summary["data_files"]) == {"train", "validation", "test"}
    got = {(Path(r["path"]).name, r["split"]) for r in _rows(tmp_path / "out") if r["unit"] == "piece"}
    assert got == {(Path(val[0].path).name, "validation"), (Path(train[0].path).name, "train"),
                   (Path(test[0].path).name, "test")}
    # each file's clips follow it, and load_rows reads the split by name
    assert {r["split"] for r in ds.load_rows(tmp_path / "out", "validation")} == {"validation"}
    assert {r["path"] for r in ds.load_rows(tmp_path / "out", "validation")} == {val[0].path}
    # a rebuild in another order (another run, the same files) puts every file in the same split
    again = ds.build_dataset([list(reversed(chosen))], tmp_path / "again", workers=1, progress=False)
    assert again["sources"] == summary["sources"]
    assert "## Validation split" in (tmp_path / "out" / "README.md").read_text()


@needs_annotators
def test_pack_for_training_keeps_pieces_and_their_events(tmp_path):
    from midilm.codecs.amt.encode import encode_midi

    notts = shared_path("nottingham")
    items = list(S.nottingham(notts))[1:4]
    ds.build_dataset([items], tmp_path / "out", workers=1, progress=False)
    packed = ds.pack_for_training(tmp_path / "out", tmp_path / "packed", splits=("train",), progress=False)
    rows = ds.load_rows(tmp_path / "packed", "train")
    full = [r for r in ds.load_rows(tmp_path / "out", "train") if r["unit"] == "piece"]
    assert packed["pieces"]["train"] == len(rows) == len(full) > 0
    assert all(r["unit"] == "piece" and r["captions"] for r in rows)
    for r in rows:
        assert r["events"] == encode_midi(r["path"])  # exact, absolute times included
    assert isinstance(rows[0]["chords"], list)  # JSON columns decode as in the full dataset
    # per-family counts from the packed events equal those from the MIDI files (Nottingham: piano only)
    stats = ds.family_stats(tmp_path / "packed", "train")
    assert stats == ds.family_stats(tmp_path / "out", "train")
    assert stats["pieces"] == len(rows) and set(stats["families"]) == {"Piano"}
    assert stats["families"]["Piano"]["notes"] == stats["notes"] == sum(len(r["events"]) // 3 for r in rows)


def test_a_conversion_past_its_limit_leaves_no_file(tmp_path, monkeypatch):
    """The limit can be raised after the MIDI file is written (the alarm lands in the last write, or a
    library swallowed the first one): the conversion is reported as failed, so no file may stay behind for
    the cache to take as converted. The write is followed by a wait past the limit to make that order
    certain (a fresh-clone CI run once hit it by chance)."""
    import time

    pytest.importorskip("music21")
    real_write = S._write_piece

    def write_then_overrun(piece, dest):
        real_write(piece, dest)
        assert Path(dest).exists()
        time.sleep(5)  # the alarm interrupts this

    monkeypatch.setattr(S, "_write_piece", write_then_overrun)
    dest = tmp_path / "late.mid"
    with pytest.raises(S.TimeLimitExceeded):
        S.convert_music21("bach/bwv66.6.mxl", None, dest, timeout=0.5)
    assert not dest.exists()

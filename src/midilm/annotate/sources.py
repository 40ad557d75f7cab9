"""Where the MIDI files of the dataset builder come from: one adapter per collection.

Every adapter returns a `Source`, an iterable of `SourceItem(path, source, metadata, split, license)`:

- `folder(root)`: any folder of MIDI files (searched recursively).
- `pop909(root)`: POP909 with its human labels (key segments, chords, beats) and index.csv title/artist.
- `nottingham(root)`: the Nottingham folk tunes with index.csv (collection, tune type, title, meter, key).
- `music21_corpus(subcorpus)`: the works of the corpus shipped with music21, converted to MIDI on demand
  (see `ensure_midi`) into a cache directory keyed by corpus path.
- `giantmidi(folder, composers_csv)`: GiantMIDI-Piano files named "Surname, Firstname, Title, YouTubeID.mid"
  joined with the composer table (nationality, birth, death, and an era derived from the years).
- `lakh_midicaps(folder, captions)`: Lakh MIDI files plus MidiCaps captions (JSON, JSONL or CSV with
  `location` and `caption`).
- `groove(root)`: Groove MIDI drum performances with info.csv (style, bpm, beat or fill, meter, split).
- `freedoom(root)`, `openmsx(root)`: General MIDI band arrangements with drums; title and composer from
  CREDITS-MUSIC / src/themes.list.
- `openscore_quartets(root)`: string-quartet MusicXML scores, converted to MIDI on demand (like the music21
  corpus), composer and title from data/scores.tsv.

Scores are converted by `convert_score` / `convert_music21`: MusicXML by `midilm.music.musicxml` (all 122
OpenScore quartets in about 70 CPU s, about 80 times less than music21's parser and MIDI writer), other
formats (Humdrum, ABC) parsed by music21 and written from their notes (`piece_from_music21`); repeats are
played once as written.

Held-out split (see shared/data/README.md), decided here and nowhere else:

- POP909: song number % 10 == 0 is test.
- Nottingham: 0-based data-row index in index.csv % 10 == 0 is test.
- music21: SHA-1 of the work's corpus-relative *file* path as music21 reports it in
  `MetadataEntry.sourcePath`, with forward slashes and no work number (e.g. "bach/bwv66.6.mxl",
  "essenFolksong/han1.abc"), UTF-8 encoded, hex digest ending in "0" is test. All works of a multi-work
  file (an ABC opus) therefore share one split. See `music21_split`.
- Lakh: an MD5 file name (the Lakh naming) starting with "f" is test; a file not named by its MD5 is hashed.
- Groove MIDI: the dataset's own `split` column; its "test" rows are test, its "validation" rows are train
  (our validation split is carved out of train for every source alike, see `dataset.validation_split`).
- freedoom, openmsx, openscore-quartets: SHA-1 of the file's path relative to the folder ("musics/d_e1m1.mid",
  "src/tttheme2.mid", "scores/<composer>/<work>/sq123.mxl"), UTF-8, hex digest ending in "0" is test
  (`relpath_split`).
- Everything else (plain folders, GiantMIDI): SHA-1 of the file bytes ending in "0" is test.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import signal
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")

LICENSES = {
    "pop909": "MIT",
    "nottingham": "GPL-3.0",
    "music21": "BSD-3-Clause (music21 corpus)",
    "giantmidi": "CC-BY-4.0",
    "lakh": "CC-BY-4.0 (Lakh MIDI); captions CC-BY-SA-4.0 (MidiCaps)",
    "groove": "CC-BY-4.0 (Groove MIDI Dataset; Gillick et al., ICML 2019)",
    "freedoom": "BSD-3-Clause (Freedoom)",
    "openmsx": "GPL-2.0 (OpenMSX)",
    "openscore-quartets": "CC0-1.0 (OpenScore String Quartets)",
}

_TONICS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MD5_NAME = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class SourceItem:
    """One MIDI file to annotate. `path` may not exist yet for music21 works (see `ensure_midi`)."""

    path: str
    source: str
    metadata: dict
    split: str  # "train" | "test"
    license: str


@dataclass
class Source:
    """A named, re-iterable collection of SourceItems (the factory runs again on every iteration)."""

    name: str
    items: Callable[[], Iterator[SourceItem]] = field(repr=False)
    license: str = ""
    description: str = ""

    def __iter__(self) -> Iterator[SourceItem]:
        return self.items()


# ---------------------------------------------------------------------------------------------- helpers

def sha1_file(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def content_split(digest: str) -> str:
    """The default split from a hex content hash: last digit '0' (1 in 16) is test."""
    return "test" if digest[-1] == "0" else "train"


def music21_split(corpus_path: str) -> str:
    """Split of a music21 work from its corpus-relative file path ("bach/bwv66.6.mxl")."""
    digest = hashlib.sha1(corpus_path.replace("\\", "/").encode("utf-8")).hexdigest()
    return "test" if digest.endswith("0") else "train"


def relpath_split(relpath: str) -> str:
    """Split of a file of freedoom, openmsx or openscore-quartets from its path relative to the folder."""
    digest = hashlib.sha1(relpath.replace("\\", "/").encode("utf-8")).hexdigest()
    return "test" if digest.endswith("0") else "train"


def lakh_split(path: str | Path) -> str:
    """Lakh/MidiCaps convention: the MD5 name starts with 'f'. Files not named by MD5 are hashed."""
    stem = Path(path).stem.lower()
    digest = stem if _MD5_NAME.fullmatch(stem) else hashlib.md5(Path(path).read_bytes()).hexdigest()
    return "test" if digest.startswith("f") else "train"


def normalize_key(label: str | None) -> str | None:
    """'Gb:maj' / 'A:min' (POP909), 'G' / 'F#m' (Nottingham) -> 'F# major' / 'A minor' (project spelling)."""
    if not label:
        return None
    text = label.strip()
    m = re.fullmatch(r"([A-Ga-g])([#b]?)\s*(?::|\s)?\s*(maj|min|major|minor|m)?", text)
    if not m:
        return None
    pc = (_LETTER_PC[m.group(1).upper()] + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    mode = "minor" if m.group(3) in ("min", "minor", "m") else "major"
    return f"{_TONICS[pc]} {mode}"


def era_from_years(birth: int | None, death: int | None) -> str | None:
    """A style period from a composer's life: the year at about 35 (mid-career) picks the period.

    Bins: Medieval < 1400 <= Renaissance < 1600 <= Baroque < 1750 <= Classical < 1820 <= Romantic < 1910
    <= 20th century < 1975 <= Contemporary. Beethoven (1770) comes out Classical, Rachmaninoff (1873)
    Romantic, Ravel (1875) 20th century: the usual textbook calls at the boundaries are debatable anyway.
    """
    if birth is not None:
        year = birth + 35 if death is None else min(birth + 35, death)
    elif death is not None:
        year = death - 15
    else:
        return None
    for limit, name in ((1400, "Medieval"), (1600, "Renaissance"), (1750, "Baroque"), (1820, "Classical"),
                        (1910, "Romantic"), (1975, "20th century")):
        if year < limit:
            return name
    return "Contemporary"


def _year(text: str | None) -> int | None:
    m = re.search(r"\d{3,4}", text or "")
    return int(m.group()) if m else None


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _fold(name: str) -> str:
    """Match composer names across spellings of case and Unicode composition."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


def _midi_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())


def _need_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: {p} is not a directory")
    return p


# ---------------------------------------------------------------------------------------------- folder

def folder(root: str | Path, name: str | None = None, license: str = "unknown") -> Source:
    """Any folder of MIDI files; split by SHA-1 of the bytes."""
    root = _need_dir(root, "MIDI folder")
    source_name = name or "folder"

    def items() -> Iterator[SourceItem]:
        for p in _midi_files(root):
            try:
                split = content_split(sha1_file(p))
            except OSError as e:
                # unreadable files still go through so that the builder logs them as errors
                log.warning("cannot hash %s: %s", p, e)
                split = "train"
            yield SourceItem(str(p), source_name, {"relpath": p.relative_to(root).as_posix()}, split, license)

    return Source(source_name, items, license, f"MIDI files under {root}")


# ---------------------------------------------------------------------------------------------- POP909

def _pop909_root(root: Path) -> Path:
    return root / "POP909" if (root / "POP909").is_dir() and not (root / "index.csv").exists() else root


def _read_rows(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()]


def _merge_segments(segs: list[dict], label: str) -> list[dict]:
    """Merge consecutive equal labels, as the harmony module does for its estimates."""
    out: list[dict] = []
    for s in segs:
        if out and out[-1][label] == s[label] and abs(out[-1]["end"] - s["start"]) < 1e-3:
            out[-1]["end"] = s["end"]
        else:
            out.append(dict(s))
    return out


def pop909_labels(song_dir: Path) -> dict:
    """Human labels of one POP909 song, times in seconds of the MIDI file."""
    keys = [{"start": float(r[0]), "end": float(r[1]), "key": normalize_key(r[2]) or r[2]}
            for r in _read_rows(song_dir / "key_audio.txt") if len(r) >= 3]
    chords = [{"start": float(r[0]), "end": float(r[1]), "label": r[2]}
              for r in _read_rows(song_dir / "chord_midi.txt") if len(r) >= 3]
    beats = [r for r in _read_rows(song_dir / "beat_midi.txt") if len(r) >= 2]
    out: dict = {}
    if keys:
        keys = _merge_segments(keys, "key")
        main = max(keys, key=lambda k: k["end"] - k["start"])
        out["label_key"] = main["key"]
        out["label_key_segments"] = keys
    if chords:
        out["label_chords"] = _merge_segments(chords, "label")
    if beats:
        # column 2 flags the downbeat of each bar (column 3 flags every second bar)
        out["label_beats"] = [round(float(r[0]), 4) for r in beats]
        out["label_downbeats"] = [round(float(r[0]), 4) for r in beats if float(r[1]) >= 0.5]
    return out


def pop909(root: str | Path) -> Source:
    """POP909 (`root` is the dataset folder or its POP909/ subfolder); song number % 10 == 0 is test."""
    base = _pop909_root(_need_dir(root, "POP909"))
    index: dict[int, dict] = {}
    index_csv = base / "index.csv"
    if index_csv.exists():
        with index_csv.open(encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                if (row.get("song_id") or "").strip().isdigit():
                    index[int(row["song_id"])] = row

    def items() -> Iterator[SourceItem]:
        for song_dir in sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit()):
            number = int(song_dir.name)
            midi = song_dir / f"{song_dir.name}.mid"
            if not midi.exists():
                continue
            row = index.get(number, {})
            meta: dict = {"song_id": song_dir.name, "title": row.get("name") or None,
                          "artist": row.get("artist") or None, "genre": "pop"}
            beats, quavers = _int(row.get("num_beats_per_measure")), _int(row.get("num_quavers_per_beat"))
            if beats and quavers:
                # the index's own bar length; the files' time-signature events are unreliable (often 1/4)
                meta["label_meter"] = f"{beats * 3}/8" if quavers == 3 else f"{beats}/4"
            meta.update(pop909_labels(song_dir))
            split = "test" if number % 10 == 0 else "train"
            yield SourceItem(str(midi), "pop909", meta, split, LICENSES["pop909"])

    return Source("pop909", items, LICENSES["pop909"], "POP909 pop songs (piano arrangements)")


# ---------------------------------------------------------------------------------------------- Nottingham

_TUNE_TYPES = {
    "reels": "reel", "jigs": "jig", "hornpipes": "hornpipe", "waltzes": "waltz", "slip jigs": "slip jig",
    "morris dance tunes": "morris dance", "playford dance tunes": "playford dance",
    "christmas carols": "Christmas carol", "ashover collection (mixed dance tunes)": "dance tune",
}


def nottingham(root: str | Path) -> Source:
    """Nottingham folk tunes from index.csv; the 0-based data row % 10 == 0 is test."""
    base = _need_dir(root, "Nottingham")
    index_csv = base / "index.csv"
    if not index_csv.exists():
        raise FileNotFoundError(f"Nottingham: {index_csv} is missing")

    def items() -> Iterator[SourceItem]:
        with index_csv.open(encoding="utf-8-sig", newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                rel = row.get("midi_full") or f"MIDI/{row['collection']}{row['X']}.mid"
                tune_type = (row.get("tune_type") or "").strip()
                meta = {
                    "title": row.get("title") or None,
                    "collection": row.get("collection") or None,
                    "tune_type": _TUNE_TYPES.get(tune_type, tune_type or None),
                    "tune_number": _int(row.get("X")),
                    "alt_titles": row.get("alt_titles") or None,
                    # upstream "source" is the tune's transcriber/origin, renamed to not clash with ours
                    "tune_source": row.get("source") or None,
                    "label_meter": row.get("meter") or None,
                    "label_key": normalize_key(row.get("key")),
                    "label_chord_symbols": (row.get("distinct_chords") or "").split(),
                    "genre": "folk",
                    "index_row": i,
                }
                split = "test" if i % 10 == 0 else "train"
                yield SourceItem(str(base / rel), "nottingham", meta, split, LICENSES["nottingham"])

    return Source("nottingham", items, LICENSES["nottingham"], "Nottingham Music Database folk tunes")


# ---------------------------------------------------------------------------------------------- music21

# style periods of the composer collections of the corpus; folk collections get none
_MUSIC21_ERAS = {
    "trecento": "Medieval", "ciconia": "Medieval", "luca": "Medieval", "josquin": "Renaissance",
    "palestrina": "Renaissance", "lusitano": "Renaissance", "monteverdi": "Renaissance",
    "bach": "Baroque", "handel": "Baroque", "corelli": "Baroque", "cpebach": "Classical",
    "haydn": "Classical", "mozart": "Classical", "beethoven": "Classical", "weber": "Romantic",
    "schubert": "Romantic", "schumann_robert": "Romantic", "schumann_clara": "Romantic", "chopin": "Romantic",
    "verdi": "Romantic", "beach": "Romantic", "johnson_j_r": "20th century", "joplin": "20th century",
    "schoenberg": "20th century", "webern": "20th century", "liliuokalani": "Romantic",
}
_MUSIC21_FOLK = {"essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk", "nottingham-dataset"}
# the composer collections of the corpus: composer, nationality, genre and the kind of piece where the whole
# collection is one kind (`_music21_kind` refines per file)
_MUSIC21_COMPOSERS = {
    "bach": ("Johann Sebastian Bach", "German"), "beethoven": ("Ludwig van Beethoven", "German"),
    "haydn": ("Joseph Haydn", "Austrian"), "mozart": ("Wolfgang Amadeus Mozart", "Austrian"),
    "handel": ("George Frideric Handel", "German"), "chopin": ("Frédéric Chopin", "Polish"),
    "schumann_robert": ("Robert Schumann", "German"), "schumann_clara": ("Clara Schumann", "German"),
    "schubert": ("Franz Schubert", "Austrian"), "joplin": ("Scott Joplin", "American"),
    "verdi": ("Giuseppe Verdi", "Italian"), "weber": ("Carl Maria von Weber", "German"),
    "webern": ("Anton Webern", "Austrian"), "schoenberg": ("Arnold Schoenberg", "Austrian"),
    "monteverdi": ("Claudio Monteverdi", "Italian"), "palestrina": ("Giovanni Pierluigi da Palestrina", "Italian"),
    "corelli": ("Arcangelo Corelli", "Italian"), "cpebach": ("Carl Philipp Emanuel Bach", "German"),
    "beach": ("Amy Beach", "American"), "johnson_j_r": ("J. Rosamond Johnson", "American"),
    "liliuokalani": ("Liliʻuokalani", "Hawaiian"), "lusitano": ("Vicente Lusitano", "Portuguese"),
    "ciconia": ("Johannes Ciconia", None), "josquin": ("Josquin des Prez", None), "luca": (None, None),
    "trecento": (None, "Italian"),
}
MUSIC21_CLASSICAL = tuple(_MUSIC21_COMPOSERS)
_MUSIC21_KINDS = {
    "bach": "chorale", "haydn": "string quartet", "beethoven": "string quartet", "chopin": "mazurka",
    "handel": "aria", "verdi": "aria", "monteverdi": "madrigal", "lusitano": "madrigal", "palestrina": "mass movement",
    "luca": "mass movement", "joplin": "rag", "weber": "concertino", "corelli": "church sonata",
    "cpebach": "keyboard sonata", "schubert": "art song", "schoenberg": "piano piece", "johnson_j_r": "hymn",
    "liliuokalani": "song", "ciconia": "canon",
}
_MUSIC21_FILE_KINDS = (  # (corpus path prefix, kind), first match wins
    ("bach/bwv846", "prelude"), ("mozart/k545", "piano sonata"), ("mozart/k", "string quartet"),
    ("schumann_robert/opus41", "string quartet"), ("schumann_robert/", "art song"),
    ("schumann_clara/polonaise", "polonaise"), ("schumann_clara/opus17", "piano trio"),
)
# not pieces to learn from: analyses (.rntxt), demonstration fragments and exercises
_MUSIC21_SKIP_SUFFIXES = (".rntxt",)


def _music21_kind(corpus_path: str) -> str | None:
    kind = next((k for prefix, k in _MUSIC21_FILE_KINDS if corpus_path.startswith(prefix)), None)
    return kind or _MUSIC21_KINDS.get(corpus_path.split("/")[0])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midilm" / "music21-midi"


def music21_cache_path(cache_dir: str | Path, corpus_path: str, number: str | None) -> Path:
    """The cached MIDI of one work: <cache>/<corpus path>[__<number>].mid."""
    suffix = f"__{number}" if number not in (None, "") else ""
    return Path(cache_dir) / f"{corpus_path}{suffix}.mid"


def music21_corpus(subcorpus: str | None = None, cache_dir: str | Path | None = None) -> Source:
    """Works of music21's core corpus. `subcorpus` keeps corpus paths whose top folder starts with one of
    its comma-separated names, case-insensitively ("essen" -> essenFolksong/, "bach,palestrina");
    "classical" stands for the composer collections (`MUSIC21_CLASSICAL`: Bach ... Mozart, Palestrina, the
    trecento). Roman-numeral analyses (.rntxt) are left out, and so is a Humdrum (.krn) file beside a
    MusicXML file of the same work. Composer collections get genre "classical" (Joplin: "ragtime"), the
    composer, nationality and era, and the kind of piece where known ("chorale", "string quartet")."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    wanted = [s.strip().lower() for s in (subcorpus or "").split(",") if s.strip()]
    if "classical" in wanted:
        wanted = [w for w in wanted if w != "classical"] + list(MUSIC21_CLASSICAL)

    def items() -> Iterator[SourceItem]:
        from music21 import corpus  # slow import (~1 s); only when the corpus is used

        bundle = corpus.corpora.CoreCorpus().metadataBundle
        # iterating the bundle goes through __getitem__, which rebuilds a list per entry (O(n^2): 30 s for
        # the core corpus); its entry dict gives the same entries in the same order at once
        entries_dict = getattr(bundle, "_metadataEntries", None)
        entries = []
        for entry in (entries_dict.values() if isinstance(entries_dict, dict) else bundle):
            corpus_path = Path(entry.sourcePath).as_posix()
            top = corpus_path.split("/")[0]
            if corpus_path.lower().endswith(_MUSIC21_SKIP_SUFFIXES):
                continue
            if not wanted or any(top.lower().startswith(w) for w in wanted):
                entries.append((corpus_path, top, None if entry.number is None else str(entry.number), entry))
        # a multi-work file also has an entry for the whole file (an Opus), which is no single work
        numbered = {cp for cp, _, number, _ in entries if number is not None}
        stems = {cp.rsplit(".", 1)[0] for cp, _, _, _ in entries if cp.lower().endswith(_MUSICXML_SUFFIXES)}
        for corpus_path, top, number, entry in entries:
            if number is None and corpus_path in numbered:
                continue
            if corpus_path.lower().endswith(".krn") and corpus_path.rsplit(".", 1)[0] in stems:
                continue  # the same work as MusicXML, which reads without music21
            md = entry.metadata  # None for a few entries of the bundle
            locale = getattr(md, "localeOfComposition", None)
            composer = getattr(md, "composer", None)
            composer = (str(composer).strip() or None) if composer and str(composer) != "None" else None
            known, nationality = _MUSIC21_COMPOSERS.get(top, (None, None))
            genre = "folk" if top in _MUSIC21_FOLK else ("ragtime" if top == "joplin" else
                                                         "classical" if top in _MUSIC21_COMPOSERS else None)
            meta = {
                "title": _music21_title(md) if md is not None else None,
                "composer": known or (composer.splitlines()[0].strip() if composer else None),
                "nationality": nationality,
                "region": str(locale) if locale else None,
                "era": _MUSIC21_ERAS.get(top),
                "genre": genre,
                "tune_type": _music21_kind(corpus_path),
                "collection": top,
                "corpus_path": corpus_path,
                "music21_number": number,
            }
            yield SourceItem(str(music21_cache_path(cache, corpus_path, number)), "music21", meta,
                             music21_split(corpus_path), LICENSES["music21"])

    label = f"music21 corpus ({subcorpus})" if wanted else "music21 corpus"
    return Source("music21", items, LICENSES["music21"], label)


def _music21_title(md) -> str | None:
    title = md.title or md.movementName
    # music21 falls back to the file name ("bwv101.7.mxl"), which is no title
    if not title or re.search(r"\.(mxl|xml|musicxml|krn|abc|rntxt|mid)$", str(title)):
        return None
    return str(title).strip() or None


class TimeLimitExceeded(TimeoutError):
    pass


@contextmanager
def time_limit(seconds: float | None, what: str = "work") -> Iterator[None]:
    """Raise TimeLimitExceeded in the block after `seconds` (SIGALRM). Pool and Ray workers run tasks in
    their main thread, where this works; elsewhere (other threads, no SIGALRM) the block runs unbounded."""
    if (not seconds or seconds <= 0 or not hasattr(signal, "SIGALRM")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    fired = False

    def on_alarm(signum, frame):
        nonlocal fired
        fired = True
        # music21 (and other libraries) catch broad exceptions and go on: fire again until one escapes, and
        # raise at the block's end if none did, so that a limit never passes silently
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        raise TimeLimitExceeded(f"{what} exceeded {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if fired:
        raise TimeLimitExceeded(f"{what} exceeded {seconds:g} s")


_MUSICXML_SUFFIXES = (".mxl", ".xml", ".musicxml")


def music21_corpus_file(corpus_path: str) -> Path:
    """The file of a work of music21's core corpus ("bach/bwv66.6.mxl")."""
    from music21 import common

    return Path(common.getCorpusFilePath()) / corpus_path


def convert_music21(corpus_path: str, number: str | None, dest: str | Path, timeout: float | None = 120.0) -> Path:
    """Convert one corpus work to MIDI at `dest` (atomically), within `timeout`: MusicXML files with
    `midilm.music.musicxml` (no music21 parse), other formats (Humdrum, ABC) parsed by music21 and written
    from their notes (`piece_from_music21`). Repeats are played once as written."""

    def parse():
        from music21 import corpus

        kwargs = {"number": int(number) if number.isdigit() else number} if number else {}
        return corpus.parse(corpus_path, **kwargs)

    # a numbered work is one tune of a multi-work file, which only music21 splits
    score_file = music21_corpus_file(corpus_path) if number is None else None
    return _convert(score_file, parse, Path(dest), timeout, "music21 conversion")


def convert_score(score_path: str | Path, dest: str | Path, timeout: float | None = 600.0) -> Path:
    """Convert a score file to MIDI at `dest` (atomically), within `timeout`: MusicXML (.mxl, .xml,
    .musicxml) with `midilm.music.musicxml`, anything else music21 parses (ABC, Humdrum) through music21
    and `piece_from_music21`. Repeats are played once as written."""

    def parse():
        from music21 import converter

        return converter.parse(str(score_path))

    return _convert(Path(score_path), parse, Path(dest), timeout, "score conversion")


def _convert(score_file: Path | None, parse: Callable, dest: Path, timeout: float | None, what: str) -> Path:
    """MusicXML through our reader when `score_file` is one it reads, else (or when it refuses the file, e.g.
    score-timewise) music21's `parse()` and `piece_from_music21`; written to `dest` within `timeout`."""
    with _no_output_past_limit(dest), time_limit(timeout, what):
        if score_file is not None and score_file.name.lower().endswith(_MUSICXML_SUFFIXES):
            from midilm.music.musicxml import MusicXmlError

            try:
                _write_score_file(score_file, dest)
                return dest
            except MusicXmlError as e:
                log.info("%s; converting it with music21", e)
        _write_piece(piece_from_music21(parse()), dest)
    return dest


@contextmanager
def _no_output_past_limit(dest: Path) -> Iterator[None]:
    """Remove `dest` when the block exceeds its time limit. The limit can be raised after the file is written
    (a library swallowed the first alarm, or it fired during the last write): a conversion reported as failed
    must not leave a file that the cache then takes for a finished one."""
    try:
        yield
    except TimeLimitExceeded:
        dest.unlink(missing_ok=True)
        raise


def _write_score_file(score_path: str | Path, dest: Path) -> None:
    from midilm.music.musicxml import read_musicxml

    _write_piece(read_musicxml(score_path), dest)


def _write_piece(piece, dest: Path) -> None:
    from midilm.music.midi_io import write_midi

    write_midi(piece, dest)
    os.chmod(dest, 0o644)  # the cache is shared like any other


def piece_from_music21(score):
    """A Piece (480 ticks per quarter) from a parsed music21 score: the sounding notes of each part with
    ties joined and grace notes left out, repeats once as written, tempo from its metronome marks, meter
    and key from the first part, programs as `midilm.music.musicxml.program_for_part` chooses them.
    Raises MidiReadError when it holds no notes."""
    import numpy as np

    from midilm.errors import MidiReadError
    from midilm.music.musicxml import TICKS_PER_BEAT, part_programs
    from midilm.music.piece import KeySignature, Piece, TimeSignature, Track
    from midilm.music.tempo import TempoMap

    parts = list(getattr(score, "parts", None) or []) or [score]
    # both copy the whole score (two thirds of the cost of a Palestrina mass movement): sounding pitch only
    # where an instrument transposes, ties joined in place (the score is ours, parsed for this)
    if any(getattr(p.getInstrument(returnDefault=False), "transposition", None) for p in parts):
        with contextlib.suppress(Exception):  # music21 raises broadly on odd transpositions: keep written pitch
            score = score.toSoundingPitch()
            parts = list(getattr(score, "parts", None) or []) or [score]
    names = [str(p.partName or "") for p in parts]
    midi_programs = []
    for p in parts:
        inst = p.getInstrument(returnDefault=False)
        midi_programs.append(None if inst is None or inst.midiProgram is None else inst.midiProgram + 1)
    programs = part_programs(names, midi_programs)
    cols: list[tuple] = []
    tracks: list[Track] = []
    for idx, (part, program) in enumerate(zip(parts, programs)):
        tracks.append(Track(names[idx], program))
        part.stripTies(inPlace=True)
        flat = part.flatten()
        for n in flat.notes:
            ql = float(n.quarterLength)
            if ql <= 0:  # grace notes take no time in the score
                continue
            start = round(float(n.offset) * TICKS_PER_BEAT)
            end = max(start + 1, round((float(n.offset) + ql) * TICKS_PER_BEAT))
            velocity = n.volume.velocity if n.volume.velocity is not None else 90
            for pitch in getattr(n, "pitches", ()):
                if 0 <= pitch.midi <= 127:
                    cols.append((start, end, pitch.midi, int(velocity), program, idx))
    if not cols:
        raise MidiReadError(None, "the score holds no notes")
    tempos = []
    try:
        for start, _end, mark in score.metronomeMarkBoundaries():
            bpm = mark.getQuarterBPM()
            if bpm:
                tempos.append((round(float(start) * TICKS_PER_BEAT), round(60e6 / bpm)))
    except Exception:  # no usable marks: the default 120 bpm
        tempos = []
    first = parts[0].flatten()
    time_sigs = [TimeSignature(round(float(ts.offset) * TICKS_PER_BEAT), ts.numerator, ts.denominator)
                 for ts in first.getElementsByClass("TimeSignature")]
    key_sigs = [KeySignature(round(float(k.offset) * TICKS_PER_BEAT), max(-7, min(7, k.sharps)),
                             getattr(k, "mode", "major") == "minor")
                for k in first.getElementsByClass("KeySignature")]
    a = np.asarray(cols, dtype=np.int64)
    return Piece(TICKS_PER_BEAT, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], tracks=tracks,
                 tempo_map=TempoMap.from_changes(TICKS_PER_BEAT, tempos),
                 time_signatures=_first_per_tick(time_sigs), key_signatures=_first_per_tick(key_sigs))


def _first_per_tick(items: list) -> list:
    out: dict[int, object] = {}
    for it in sorted(items, key=lambda x: x.tick):
        out.setdefault(it.tick, it)
    return list(out.values())


def ensure_midi(item: SourceItem, timeout: float | None = 120.0) -> Path:
    """The item's MIDI file, converting a music21 work or a score (`metadata["score_path"]`) into the
    cache first when it is not there yet (`timeout`: seconds for the conversion, None for no limit)."""
    path = Path(item.path)
    if path.exists():
        return path
    if item.source == "music21" and item.metadata.get("corpus_path"):
        convert_music21(item.metadata["corpus_path"], item.metadata.get("music21_number"), path, timeout)
    elif item.metadata.get("score_path"):
        convert_score(item.metadata["score_path"], path, timeout)
    return path


# ---------------------------------------------------------------------------------------------- GiantMIDI

def read_composers(csv_path: str | Path) -> dict[str, dict]:
    """GiantMIDI's composers_manually_checked.csv (tab-separated: composer_name, nationality, birth,
    death) keyed by folded "Firstname Surname"."""
    out: dict[str, dict] = {}
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        delim = "\t" if "\t" in sample else ","
        for row in csv.DictReader(f, delimiter=delim):
            name = (row.get("composer_name") or "").strip()
            if name:
                out.setdefault(_fold(name), row)
    return out


def parse_giantmidi_name(path: str | Path) -> dict | None:
    """'Chopin, Frédéric, Nocturne in E-flat, Op.9, ABCdef12345.mid' -> surname, firstname, title,
    youtube_id (the title may itself contain commas; the YouTube id is the last field)."""
    parts = [p.strip() for p in Path(path).stem.split(", ")]
    if len(parts) < 4:
        return None
    return {"surname": parts[0], "firstname": parts[1], "title": ", ".join(parts[2:-1]),
            "youtube_id": parts[-1]}


def giantmidi(folder_path: str | Path, composers_csv: str | Path | None = None) -> Source:
    """GiantMIDI-Piano files with composer metadata; split by SHA-1 of the bytes."""
    root = _need_dir(folder_path, "GiantMIDI folder")
    if composers_csv is None and (root / "composers_manually_checked.csv").exists():
        composers_csv = root / "composers_manually_checked.csv"
    composers = read_composers(composers_csv) if composers_csv else {}

    def items() -> Iterator[SourceItem]:
        for p in _midi_files(root):
            meta: dict = {"instrument_hint": "piano"}
            parsed = parse_giantmidi_name(p)
            if parsed:
                name = " ".join(x for x in (parsed["firstname"], parsed["surname"]) if x)
                row = composers.get(_fold(name), {})
                nationality = (row.get("nationality") or "").strip()
                birth, death = _year(row.get("birth")), _year(row.get("death"))
                meta.update(title=parsed["title"] or None, composer=name or None,
                            nationality=None if nationality in ("", "unknown") else nationality,
                            birth=birth, death=death, era=era_from_years(birth, death),
                            youtube_id=parsed["youtube_id"])
            try:
                split = content_split(sha1_file(p))
            except OSError:
                split = "train"
            yield SourceItem(str(p), "giantmidi", meta, split, LICENSES["giantmidi"])

    return Source("giantmidi", items, LICENSES["giantmidi"], "GiantMIDI-Piano transcribed piano recordings")


# ---------------------------------------------------------------------------------------------- Lakh + MidiCaps

def read_midicaps(path: str | Path) -> dict[str, dict]:
    """MidiCaps records keyed by the file stem (the Lakh MD5) of their `location`.

    Accepts a JSON list, a single JSON object, a dict keyed by location, JSON Lines (MidiCaps' own
    train.json is JSON Lines despite its name) or CSV.
    """
    path = Path(path)
    records: list[dict] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            records = list(csv.DictReader(f))
    else:
        text = path.read_text(encoding="utf-8-sig")
        try:
            data = json.loads(text)
            if isinstance(data, list):
                records = data
            elif isinstance(data, dict) and "location" in data:
                records = [data]
            elif isinstance(data, dict):
                records = [{"location": k, **(v if isinstance(v, dict) else {"caption": v})}
                           for k, v in data.items()]
        except json.JSONDecodeError:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out: dict[str, dict] = {}
    for r in records:
        if isinstance(r, dict) and r.get("location"):
            out.setdefault(Path(str(r["location"]).replace("\\", "/")).stem.lower(), r)
    return out


def _first_tag(value) -> str | None:
    """MidiCaps genre/mood fields: a list, or [[names], [probabilities]], or their Python repr."""
    if isinstance(value, str):
        names = re.findall(r"'([^']+)'", value)
        return names[0] if names else (value.strip() or None)
    if isinstance(value, list) and value:
        first = value[0]
        return _first_tag(first) if isinstance(first, list) else str(first)
    return None


def _tag_list(value) -> list[str]:
    if isinstance(value, str):
        return re.findall(r"'([^']+)'", value)
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [str(v) for v in value[0]]
    return [str(v) for v in value] if isinstance(value, list) else []


def lakh_midicaps(folder_path: str | Path, captions: str | Path | None = None) -> Source:
    """Lakh MIDI files (MD5 names) with their MidiCaps captions; MD5 starting with 'f' is test."""
    root = _need_dir(folder_path, "Lakh folder")
    records = read_midicaps(captions) if captions else {}

    def items() -> Iterator[SourceItem]:
        for p in _midi_files(root):
            rec = records.get(p.stem.lower(), {})
            meta: dict = {"lakh_md5": p.stem.lower() if _MD5_NAME.fullmatch(p.stem.lower()) else None}
            if rec:
                meta.update(midicaps_caption=str(rec.get("caption") or "").strip() or None,
                            location=rec.get("location"), genre=_first_tag(rec.get("genre")),
                            mood=_tag_list(rec.get("mood")))
            try:
                split = lakh_split(p)
            except OSError:
                split = "train"
            yield SourceItem(str(p), "lakh", meta, split, LICENSES["lakh"])

    return Source("lakh", items, LICENSES["lakh"], "Lakh MIDI with MidiCaps captions")


# ---------------------------------------------------------------------------------------------- Groove MIDI

# info.csv style words as a caption says them
_GROOVE_STYLES = {"afrocuban": "Afro-Cuban", "afrobeat": "Afrobeat", "hiphop": "hip hop", "neworleans": "New Orleans",
                  "middleeastern": "Middle Eastern", "highlife": "highlife", "rnb": "R&B"}


def groove(root: str | Path) -> Source:
    """Groove MIDI drum performances from info.csv; its own "test" rows are test (see the module doc)."""
    base = _need_dir(root, "Groove MIDI")
    info = base / "info.csv"
    if not info.exists():
        raise FileNotFoundError(f"Groove MIDI: {info} is missing")

    def items() -> Iterator[SourceItem]:
        with info.open(encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                rel = (row.get("midi_filename") or "").strip()
                if not rel:
                    continue
                top, _, detail = (row.get("style") or "").partition("/")
                # "latin/brazilian-samba" names a style; "funk/groove3" or "rock/fill" only numbers takes
                detail = re.sub(r"\d+$", "", detail).replace("-", " ").strip()
                beat_type = (row.get("beat_type") or "").strip()
                meter = (row.get("time_signature") or "").strip().replace("-", "/")
                meta = {
                    "genre": _GROOVE_STYLES.get(top, top) or None,
                    "style_detail": None if detail in ("", "groove", "fill", "beat") else detail,
                    "tune_type": {"beat": "groove", "fill": "drum fill"}.get(beat_type),
                    "drummer": row.get("drummer") or None,
                    "session": row.get("session") or None,
                    "label_bpm": _int(row.get("bpm")),
                    "label_meter": meter or None,
                    "groove_split": row.get("split") or None,
                    "instrument_hint": "drums",
                }
                split = "test" if (row.get("split") or "").strip() == "test" else "train"
                yield SourceItem(str(base / rel), "groove", meta, split, LICENSES["groove"])

    return Source("groove", items, LICENSES["groove"], "Groove MIDI Dataset drum performances")


# ---------------------------------------------------------------------------------------------- Freedoom

_FREEDOOM_ROLES = {  # CREDITS-MUSIC section headline -> file per role line
    "phase 1": {"title": "d_intro.mid", "intermission": "d_inter.mid", "victory": "d_victor.mid",
                "bunny": "d_bunny.mid"},
    "phase 2": {"title": "d_dm2ttl.mid", "intermission": "d_dm2int.mid", "story": "d_read_m.mid"},
    "freedm": {"title": "d_fdmttl.mid", "intermission": "d_fdmint.mid", "story": "d_fdmrdm.mid"},
}
_CREDIT = re.compile(r'^\s*(?P<slot>[A-Za-z0-9 ]+?):\s*(?:"(?P<title>[^"]+)"|(?P<file>\S+\.mid))\s+by\s+(?P<rest>.+)$')
_DERIVED = re.compile(r",\s*(remix of|based on|originally by)\b", re.IGNORECASE)


def read_freedoom_credits(path: str | Path) -> dict[str, dict]:
    """CREDITS-MUSIC -> {file name: {title, composer, derived}} for the current tracks (the sections
    before "Previously Featured"). `derived` is True for remixes of, or works based on, other pieces."""
    out: dict[str, dict] = {}
    section = ""
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        head = re.fullmatch(r"\s*--(.+?)--\s*", line)
        if head:
            section = head.group(1).strip().lower()
            if section.startswith("previously"):
                break
            continue
        m = _CREDIT.match(line)
        if not m:
            continue
        slot = m.group("slot").strip().lower()
        if re.fullmatch(r"e\dm\d|map\d\d|dm\d\d", slot):
            name = f"d_{slot}.mid"
        else:
            name = _FREEDOOM_ROLES.get(section, {}).get(slot)
            if not name:
                continue
        rest = m.group("rest").strip()
        derived = bool(_DERIVED.search(rest))
        composer = _DERIVED.split(rest)[0].strip()
        composer = re.split(r",\s*modified by\b", composer)[0].strip()
        composer = re.sub(r'\s*"[^"]*"\s*', " ", composer).strip()  # drop nicknames: Lola "BlueWorrior" Harvey
        out[name] = {"title": m.group("title") or None, "composer": composer or None, "derived": derived}
    return out


def freedoom(root: str | Path, include_derived: bool = False) -> Source:
    """Freedoom's game music (musics/*.mid), title and composer from CREDITS-MUSIC. Remixes of and works
    based on other pieces are left out unless `include_derived` (the data README's caution), and so is
    the placeholder dummy.mid. Split by SHA-1 of the path relative to the folder."""
    base = _need_dir(root, "Freedoom")
    credits_file = base / "CREDITS-MUSIC"
    credits = read_freedoom_credits(credits_file) if credits_file.exists() else {}

    def items() -> Iterator[SourceItem]:
        for p in _midi_files(base):
            rel = p.relative_to(base).as_posix()
            credit = credits.get(p.name.lower(), {})
            if p.name.lower() == "dummy.mid" or (credit.get("derived") and not include_derived):
                continue
            meta = {"title": credit.get("title"), "composer": credit.get("composer"), "genre": "video game",
                    "collection": "Freedoom", "relpath": rel}
            yield SourceItem(str(p), "freedoom", meta, relpath_split(rel), LICENSES["freedoom"])

    return Source("freedoom", items, LICENSES["freedoom"], "Freedoom game music (General MIDI band arrangements)")


# ---------------------------------------------------------------------------------------------- OpenMSX

_OPENMSX_PLAYLISTS = {"theme": "OpenTTD theme", "old": "Old Style", "new": "New Style", "ezy": "Ezy Street"}
# style words a title states outright; Ezy Street is OpenTTD's easy-listening playlist
_TITLE_STYLES = (("boogie", "boogie-woogie"), ("blues", "blues"), ("ragtime", "ragtime"), ("waltz", "waltz"))


def read_themes_list(path: str | Path) -> dict[str, dict]:
    """OpenMSX's src/themes.list ("purpose; file; author; title") -> {file name: {title, composer, playlist}}."""
    out: dict[str, dict] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.lstrip().startswith("#") or line.count(";") < 3:
            continue
        purpose, name, author, title = (x.strip() for x in line.split(";", 3))
        playlist = _OPENMSX_PLAYLISTS.get(purpose.split("_")[0])
        out[name.lower()] = {"title": title or None, "composer": author.strip("-").strip() or None,
                             "playlist": playlist}
    return out


def openmsx(root: str | Path) -> Source:
    """OpenMSX (OpenTTD's music), title and author from src/themes.list; split by SHA-1 of the relative path."""
    base = _need_dir(root, "OpenMSX")
    themes_file = next((p for p in (base / "src" / "themes.list", base / "themes.list") if p.exists()), None)
    themes = read_themes_list(themes_file) if themes_file else {}

    def items() -> Iterator[SourceItem]:
        for p in _midi_files(base):
            rel = p.relative_to(base).as_posix()
            theme = themes.get(p.name.lower(), {})
            title = theme.get("title") or ""
            genre = next((g for word, g in _TITLE_STYLES if word in title.lower()), None)
            if genre is None and theme.get("playlist") == "Ezy Street":
                genre = "easy listening"
            meta = {"title": title or None, "composer": theme.get("composer"), "genre": genre,
                    "playlist": theme.get("playlist"), "collection": "OpenMSX", "relpath": rel}
            yield SourceItem(str(p), "openmsx", meta, relpath_split(rel), LICENSES["openmsx"])

    return Source("openmsx", items, LICENSES["openmsx"], "OpenMSX game music (General MIDI band arrangements)")


# ---------------------------------------------------------------------------------------------- OpenScore quartets

_KEY_IN_TITLE = re.compile(r"\bin\s+([A-Ga-g])(?:[- ](flat|sharp)|([#b]))?[- ]+(major|minor)\b", re.IGNORECASE)


def key_from_title(title: str | None) -> str | None:
    """'String Quartet No.3 in E-flat Major' -> 'Eb major' (project spelling); None without a key."""
    m = _KEY_IN_TITLE.search(title or "")
    if not m:
        return None
    accidental = {"flat": "b", "sharp": "#"}.get((m.group(2) or "").lower(), m.group(3) or "")
    return normalize_key(f"{m.group(1).upper()}{accidental}:{m.group(4).lower()[:3]}")


# the composers of the OpenScore quartets by folder surname: birth, death, nationality (GiantMIDI's composer
# table misses a quarter of them and has some wrong; these are the standard reference dates)
_QUARTET_COMPOSERS = {
    "Andrée": (1841, 1929, "Swedish"), "Arriaga": (1806, 1826, "Spanish"), "Bartók": (1881, 1945, "Hungarian"),
    "Beach": (1867, 1944, "American"), "Beethoven": (1770, 1827, "German"), "Boccherini": (1743, 1805, "Italian"),
    "Borodin": (1833, 1887, "Russian"), "Brahms": (1833, 1897, "German"), "Bridge": (1879, 1941, "British"),
    "Busoni": (1866, 1924, "Italian"), "Carreño": (1853, 1917, "Venezuelan"), "Cherubini": (1760, 1842, "Italian"),
    "Debussy": (1862, 1918, "French"), "Delius": (1862, 1934, "British"), "Dvořák": (1841, 1904, "Czech"),
    "Elgar": (1857, 1934, "British"), "Fauré": (1845, 1924, "French"), "Glazunov": (1865, 1936, "Russian"),
    "Glinka": (1804, 1857, "Russian"), "Gounod": (1818, 1893, "French"), "Gouvy": (1819, 1898, "French"),
    "Grieg": (1843, 1907, "Norwegian"), "Haydn": (1732, 1809, "Austrian"), "Hensel": (1805, 1847, "German"),
    "Hoffmeister": (1754, 1812, "German"), "Indy": (1851, 1931, "French"), "Janáček": (1854, 1928, "Czech"),
    "Kalliwoda": (1801, 1866, "Czech"), "Krzyżanowska": (1860, 1937, "Polish"), "Maier": (1853, 1894, "Swedish"),
    "Mayer": (1812, 1883, "German"), "Mendelssohn": (1809, 1847, "German"), "Moeran": (1894, 1950, "British"),
    "Mozart": (1756, 1791, "Austrian"), "Müller-Hermann": (1878, 1941, "Austrian"), "Nielsen": (1865, 1931, "Danish"),
    "Ravel": (1875, 1937, "French"), "Reger": (1873, 1916, "German"), "Saint-Georges": (1745, 1799, "French"),
    "Schubert": (1797, 1828, "Austrian"), "Schulhoff": (1894, 1942, "Czech"), "Schumann": (1810, 1856, "German"),
    "Smetana": (1824, 1884, "Czech"), "Smyth": (1858, 1944, "British"), "Stanford": (1852, 1924, "Irish"),
    "Strauss": (1864, 1949, "German"), "Wolf": (1860, 1903, "Austrian"),
}


def _composer_from_folder(name: str) -> str:
    """'Arriaga,_Juan_Crisóstomo_de' -> 'Juan Crisóstomo de Arriaga'."""
    surname, _, first = name.replace("_", " ").partition(",")
    return " ".join(x for x in (first.strip(), surname.strip()) if x)


def openscore_quartets(root: str | Path, cache_dir: str | Path | None = None) -> Source:
    """OpenScore string quartets (scores/**/*.mxl), converted to MIDI on demand (`convert_score`) into
    `cache_dir` (default ~/.cache/midilm/openscore-midi); composer and title from data/scores.tsv, the
    composer's nationality and era from `_QUARTET_COMPOSERS`. Split by SHA-1 of the score's path relative to
    the folder."""
    base = _need_dir(root, "OpenScore quartets")
    cache = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir().parent / "openscore-midi")
    titles: dict[str, str] = {}
    tsv = base / "data" / "scores.tsv"
    if tsv.exists():
        with tsv.open(encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row.get("path"):
                    titles[unicodedata.normalize("NFC", row["path"].strip())] = (row.get("name") or "").strip()

    def items() -> Iterator[SourceItem]:
        for p in sorted((base / "scores").rglob("*.mxl")):
            rel = p.relative_to(base).as_posix()
            work = unicodedata.normalize("NFC", p.parent.relative_to(base / "scores").as_posix())
            title = titles.get(work) or p.parent.name.replace("_", " ")
            folder_name = work.split("/")[0]
            birth, death, nationality = _QUARTET_COMPOSERS.get(folder_name.split(",")[0], (None, None, None))
            meta = {"title": title, "composer": _composer_from_folder(folder_name), "genre": "classical",
                    "tune_type": "string quartet", "label_key": key_from_title(title), "collection": "OpenScore",
                    "nationality": nationality, "birth": birth, "death": death, "era": era_from_years(birth, death),
                    "relpath": rel, "score_path": str(p)}
            yield SourceItem(str(cache / f"{rel}.mid"), "openscore-quartets", meta, relpath_split(rel),
                             LICENSES["openscore-quartets"])

    return Source("openscore-quartets", items, LICENSES["openscore-quartets"], "OpenScore string quartets (MusicXML)")


# ---------------------------------------------------------------------------------------------- CLI specs

_KINDS = ("pop909", "nottingham", "music21", "giantmidi", "lakh", "folder", "groove", "freedoom", "openmsx",
          "openscore-quartets", "quartets")
_FOLDER_ADAPTERS = {"groove": groove, "freedoom": freedoom, "openmsx": openmsx}


def sources_from_args(specs: Iterable[str], cache_dir: str | Path | None = None) -> list[Source]:
    """Turn CLI specs into adapters.

    `pop909:PATH`, `nottingham:PATH`, `music21` or `music21:SUB[,SUB...]`, `giantmidi:FOLDER[,COMPOSERS.csv]`,
    `lakh:FOLDER[,CAPTIONS.json|.jsonl|.csv]`, `groove:PATH`, `freedoom:PATH`, `openmsx:PATH`,
    `openscore-quartets:PATH` (or `quartets:PATH`), `folder:PATH` or a plain PATH. `cache_dir` is where
    music21 conversions go (default ~/.cache/midilm/music21-midi; scores: its sibling openscore-midi).
    """
    out: list[Source] = []
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind not in _KINDS:  # a plain path (which may itself hold a colon)
            kind, arg = "folder", spec
        arg = arg.strip()
        if kind == "music21":
            out.append(music21_corpus(arg or None, cache_dir))
            continue
        if not arg:
            raise ValueError(f"source spec {spec!r} needs a path")
        if kind == "pop909":
            out.append(pop909(arg))
        elif kind == "nottingham":
            out.append(nottingham(arg))
        elif kind in _FOLDER_ADAPTERS:
            out.append(_FOLDER_ADAPTERS[kind](arg))
        elif kind in ("openscore-quartets", "quartets"):
            out.append(openscore_quartets(arg, Path(cache_dir).parent / "openscore-midi" if cache_dir else None))
        elif kind in ("giantmidi", "lakh"):
            # the companion file is after the last comma, so folder names may hold commas
            path, sep, extra = arg.rpartition(",")
            if not sep or Path(arg).is_dir():
                path, extra = arg, ""
            maker = giantmidi if kind == "giantmidi" else lakh_midicaps
            out.append(maker(path, extra or None))
        else:
            out.append(folder(arg, name=Path(arg).name or "folder"))
    return out

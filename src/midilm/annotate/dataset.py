"""Build the MIDI-text dataset: annotate every file of some sources and write Hugging Face-loadable Parquet.

`build_dataset(sources, out_dir)` writes into `out_dir`:

- `train.parquet`, `validation.parquet`, `test.parquet`: one row per piece (unit "piece", clip "") and
  per 20 s clip (unit "clip", clip "start" | "middle" | "end"); columns in `summary.json["columns"]`. Flat
  lists of scalars are Arrow lists, `captions` is list<string>, `qa` is list<struct<question, answer, type,
  style>>; any other nested value (lists of dicts such as `chords`, or a column whose type differs between
  rows) is a JSON string, listed in `summary.json["json_columns"]`.
- The validation split is carved out of the training split by the content hash of each file
  (`validation_split`): deterministic, stable across rebuilds and machines (it does not depend on paths or
  on the order of the sources), the same for every model trained on the dataset. Choose checkpoints,
  sizes and settings on it; the test split stays for the final figures.
- `summary.json` (counts per source and split, pieces, clips, QA pairs, duplicates, failures, seconds) and
  a dataset card `README.md`.
- Working state that makes a run resumable: `parts/part-NNNNN.jsonl` (one line per finished file, all
  its rows), `done.txt` (content hash, source, path of every finished file), `errors.jsonl` (one line per
  file that failed: path and a one-line reason) and `duplicates.jsonl`.

Per-file work (`process_item`) runs in a process pool (chunks of a few files, at most two chunks per
worker in flight, so a killed run loses only those) or, with `ray=True`, the same function as a Ray task.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from midilm.annotate.sources import SourceItem, ensure_midi, time_limit

log = logging.getLogger(__name__)

ANNOTATE_MODULES = ("midilm.annotate.analyze", "midilm.annotate.captions", "midilm.annotate.questions")
QA_FIELDS = ("question", "answer", "type", "style")
LEAD_COLUMNS = ("source", "split", "unit", "clip", "clip_start", "clip_end", "path", "content_hash",
                "license", "captions", "qa")
SPLITS = ("train", "validation", "test")
_STATE_FILES = ("done.txt", "errors.jsonl", "duplicates.jsonl", "summary.json", "README.md",
                *(f"{s}.parquet" for s in SPLITS))
ROW_GROUP = 512


def validation_split(content_hash: str) -> bool:
    """Whether a training file belongs to the validation split: SHA-1 of "validation:" + its content hash
    (the SHA-1 of its bytes) ends in hex "0", 1 in 16 of the training files. Salted so that it does not
    coincide with the held-out rules that look at the last digit of the same content hash."""
    return hashlib.sha1(f"validation:{content_hash}".encode()).hexdigest().endswith("0")


def final_split(row: dict) -> str:
    """The split a row is written to: the adapter's "test", else "validation" or "train" by content hash."""
    if row.get("split") == "test":
        return "test"
    return "validation" if validation_split(str(row.get("content_hash") or "")) else "train"


# ---------------------------------------------------------------------------------------------- per file

def process_item(item: SourceItem, n_captions: int = 3, timeout: float | None = 600.0) -> dict:
    """Annotate one file: its piece row and clip rows, or the reason it failed. Never raises (except
    KeyboardInterrupt). `timeout` bounds the whole file (music21 conversion included).

    Returns {"path", "source", "content_hash", "rows", "seconds"} or {"path", "source", "stage", "error"}.
    """
    holder = {"stage": "convert"}
    try:
        with time_limit(timeout, "annotating the file"):
            return _process(item, n_captions, holder)
    except Exception as e:  # a bad file is reported, never fatal
        reason = " ".join(str(e).split()) or type(e).__name__
        return {"path": item.path, "source": item.source, "stage": holder["stage"],
                "error": f"{type(e).__name__}: {reason}"[:500]}


def _process(item: SourceItem, n_captions: int, holder: dict) -> dict:
    """The work of process_item; `holder["stage"]` says how far it got when something raises."""
    t0 = time.perf_counter()
    path = ensure_midi(item, None)  # under the caller's time limit
    holder["stage"] = "read"
    from midilm.errors import read_file_bytes
    from midilm.music.midi_io import read_midi

    data = read_file_bytes(path)
    digest = hashlib.sha1(data).hexdigest()
    piece = read_midi(data, path=str(path))
    holder["stage"] = "import"
    # the annotation modules are imported here so that workers (and Ray tasks) load them themselves
    from midilm.annotate import analyze
    from midilm.annotate.captions import make_captions
    from midilm.annotate.questions import make_questions

    meta = {**item.metadata, "source": item.source, "license": item.license}
    holder["stage"] = "analyze"
    if hasattr(analyze, "analyze_with_clips"):  # shares one rhythm analysis between piece and clips
        whole, clips = analyze.analyze_with_clips(piece, meta)
    else:
        whole, clips = analyze.analyze_piece(piece, meta), analyze.analyze_clips(piece, meta)
    whole, clips = _plain(whole), [_plain(c) for c in clips]
    windows = list(analyze.clip_windows(piece))
    base = {"source": item.source, "split": item.split, "path": item.path, "content_hash": digest,
            "license": item.license}
    units = [("piece", "", 0.0, float(whole.get("duration", piece.duration)), whole)]
    for i, clip in enumerate(clips):
        name, start, end = _clip_window(clip, windows[i] if i < len(windows) else None, i)
        units.append(("clip", name, start, end, clip))
    meta_plain = _plain(item.metadata)
    rows = []
    for unit, name, start, end, analysis in units:
        # captions and questions see what the row holds: metadata (e.g. MidiCaps mood) fills gaps
        analysis = {**analysis, **{k: v for k, v in meta_plain.items() if k not in analysis}}
        seed = int(hashlib.sha1(f"{digest}:{name}".encode()).hexdigest()[:8], 16)
        holder["stage"] = "captions"
        captions = [str(c) for c in make_captions(analysis, seed, n_captions)]
        if unit == "piece" and item.metadata.get("midicaps_caption"):
            captions.insert(0, str(item.metadata["midicaps_caption"]))
        holder["stage"] = "questions"
        qa = [_qa(q) for q in make_questions(analysis, random.Random(seed + 1))]
        row = {**base, "unit": unit, "clip": name, "clip_start": float(start), "clip_end": float(end),
               "captions": captions, "qa": qa}
        for k, v in analysis.items():
            row.setdefault(k, v)
        rows.append(row)
    return {"path": item.path, "source": item.source, "content_hash": digest, "rows": rows,
            "seconds": round(time.perf_counter() - t0, 3)}


def process_chunk(items: list[SourceItem], n_captions: int = 3, timeout: float | None = 600.0) -> list[dict]:
    return [process_item(it, n_captions, timeout) for it in items]


def _clip_window(clip: dict, window: tuple | None, i: int) -> tuple[str, float, float]:
    """Name and time span of a clip, from the analysis dict when it says, else from clip_windows."""
    name = clip.get("clip") or (window[0] if window else ("start", "middle", "end")[min(i, 2)])
    start = clip.get("clip_start", clip.get("start", window[1] if window else 0.0))
    end = clip.get("clip_end", clip.get("end", window[2] if window else 0.0))
    return str(name), float(start), float(end)


def _qa(q: dict) -> dict:
    return {k: ("" if q.get(k) is None else str(q.get(k))) for k in QA_FIELDS}


def _plain(v):
    """JSON-safe plain Python values (numpy scalars and arrays, tuples, sets, non-str keys)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return _plain(v.tolist())
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# ---------------------------------------------------------------------------------------------- state files

def _read_jsonl(path: Path) -> Iterator[dict]:
    """Lines of a JSON Lines file; a torn last line (killed run) is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _read_done(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _count_failures(out: Path) -> int:
    """Files that failed and have not succeeded since (a retried file stays in errors.jsonl)."""
    done_paths = set()
    if (out / "done.txt").exists():
        for line in (out / "done.txt").read_text(encoding="utf-8").splitlines():
            fields = line.split("\t", 2)
            if len(fields) == 3:
                done_paths.add(fields[2])
    return len({r.get("path") for r in _read_jsonl(out / "errors.jsonl")} - done_paths)


class _Sink:
    """Append-only writers for one run; every write is flushed so a kill loses nothing finished."""

    def __init__(self, out: Path):
        parts = out / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        taken = [int(p.stem.split("-")[1]) for p in parts.glob("part-*.jsonl") if p.stem.split("-")[1].isdigit()]
        self.part_path = parts / f"part-{(max(taken) + 1) if taken else 0:05d}.jsonl"
        self.part = self.part_path.open("a", encoding="utf-8")
        self.done = (out / "done.txt").open("a", encoding="utf-8")
        self.errors = (out / "errors.jsonl").open("a", encoding="utf-8")
        self.dups = (out / "duplicates.jsonl").open("a", encoding="utf-8")

    def result(self, res: dict) -> None:
        self.part.write(json.dumps(res, ensure_ascii=False, allow_nan=True) + "\n")
        self.part.flush()
        # done.txt only after the rows are out: a kill in between at worst redoes the file
        self.done.write(f"{res['content_hash']}\t{res['source']}\t{res['path']}\n")
        self.done.flush()

    def error(self, path: str, source: str, stage: str, reason: str) -> None:
        rec = {"path": path, "source": source, "stage": stage, "reason": reason,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.errors.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.errors.flush()

    def duplicate(self, path: str, source: str, digest: str, kept: str) -> None:
        self.dups.write(json.dumps({"path": path, "source": source, "content_hash": digest, "kept": kept},
                                   ensure_ascii=False) + "\n")
        self.dups.flush()

    def close(self) -> None:
        for f in (self.part, self.done, self.errors, self.dups):
            f.close()
        if self.part_path.exists() and self.part_path.stat().st_size == 0:
            self.part_path.unlink()


# ---------------------------------------------------------------------------------------------- scheduling

@dataclass
class _Chunk:
    items: list[SourceItem]
    retried: bool = False


def _chunks(items: list[SourceItem], size: int) -> list[_Chunk]:
    return [_Chunk(items[i:i + size]) for i in range(0, len(items), size)]


def _after_crash(chunks: list[_Chunk], on_fail) -> list[_Chunk]:
    """Chunks lost with a dead worker are retried one file at a time; a file that kills a worker on its
    own is reported as failed."""
    again = []
    for ch in chunks:
        if ch.retried and len(ch.items) == 1:
            on_fail(ch.items[0])
        else:
            again.extend(_Chunk([it], retried=True) for it in ch.items)
    return again


def _run_pool(chunks: list[_Chunk], workers: int, args: tuple, handle, on_crash) -> None:
    queue = list(chunks)
    while queue:
        pending: dict[Future, _Chunk] = {}
        lost: list[_Chunk] = []
        with ProcessPoolExecutor(max_workers=workers) as pool:
            try:
                while queue or pending:
                    while queue and len(pending) < 2 * workers:
                        ch = queue.pop(0)
                        pending[pool.submit(process_chunk, ch.items, *args)] = ch
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        ch = pending.pop(fut)
                        try:
                            results = fut.result()
                        except BrokenProcessPool:
                            lost.append(ch)
                            continue
                        for res in results:
                            handle(res)
                    if lost:
                        break
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if lost:
            # the pool is unusable once a worker died: everything still pending went down with it
            lost.extend(pending.values())
            log.warning("a worker process died; retrying %d chunk(s)", len(lost))
            queue = _after_crash(lost, on_crash) + queue


def _run_ray(chunks: list[_Chunk], workers: int, args: tuple, handle, on_crash) -> None:
    import ray  # optional dependency, only for ray=True

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        task = ray.remote(max_retries=0)(process_chunk)
        queue = list(chunks)
        pending: dict = {}
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                ch = queue.pop(0)
                pending[task.remote(ch.items, *args)] = ch
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                ch = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as e:
                    log.warning("a Ray task failed (%s); retrying its files one by one", type(e).__name__)
                    queue = _after_crash([ch], on_crash) + queue
                    continue
                for res in results:
                    handle(res)
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- build

def check_annotators() -> None:
    """Fail early, once, when the annotation modules are not installed (rather than once per file)."""
    missing = [m for m in ANNOTATE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"the dataset builder needs {', '.join(missing)}, which cannot be imported")


def build_dataset(sources: list, out_dir: str | Path, workers: int | None = None, ray: bool = False,
                  resume: bool = True, limit: int | None = None, *, n_captions: int = 3, chunk_size: int = 4,
                  timeout: float | None = 600.0, retry_failed: bool = False, progress: bool = True) -> dict:
    """Annotate every file of `sources` and write the Parquet dataset, summary and card into `out_dir`.

    sources: iterables of SourceItem (the adapters of midilm.annotate.sources, or plain lists).
    workers: processes (default: all cores); 1 runs in this process. ray: run the per-file function as
    Ray tasks instead. resume: keep the results of earlier runs in `out_dir` and skip files already done
    (by content hash) or failed (unless `retry_failed`); False starts afresh. limit: at most this many
    files from each source. timeout: seconds allowed per file (music21 conversion and annotation;
    None: no limit); a file over it is logged as failed.
    Returns the summary (also written to summary.json).
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    check_annotators()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.rmtree(out / "parts", ignore_errors=True)
        for name in _STATE_FILES:
            (out / name).unlink(missing_ok=True)
    workers = max(1, int(workers or os.cpu_count() or 1))
    done = _read_done(out / "done.txt")
    failed = set() if retry_failed else {r.get("path") for r in _read_jsonl(out / "errors.jsonl")}

    items: list[SourceItem] = []
    for src in sources:
        for n, it in enumerate(src):
            if limit is not None and n >= limit:
                break
            items.append(it)

    sink = _Sink(out)
    stats: Counter = Counter()
    seen: dict[str, str] = {}  # content hash -> path of the copy kept
    todo: list[SourceItem] = []
    try:
        for it in tqdm(items, desc="hashing", unit="file", disable=not progress or len(items) < 1000):
            if it.path in failed:
                stats["skipped_failed"] += 1
                continue
            try:
                digest = hashlib.sha1(Path(it.path).read_bytes()).hexdigest()
            except OSError:
                todo.append(it)  # not converted yet (music21) or unreadable: the worker finds out
                continue
            if digest in seen:
                stats["duplicates"] += 1
                sink.duplicate(it.path, it.source, digest, seen[digest])
                continue
            seen[digest] = it.path
            if digest in done:
                stats["skipped_done"] += 1
                continue
            todo.append(it)

        bar = tqdm(total=len(todo), desc="annotating", unit="file", disable=not progress)

        def handle(res: dict) -> None:
            bar.update(1)
            if "error" in res:
                stats["failures_this_run"] += 1
                sink.error(res["path"], res["source"], res.get("stage", ""), res["error"])
                return
            digest = res["content_hash"]
            if seen.get(digest, res["path"]) != res["path"]:  # only music21 works get here unhashed
                stats["duplicates"] += 1
                sink.duplicate(res["path"], res["source"], digest, seen[digest])
                return
            seen[digest] = res["path"]
            if digest in done:
                stats["skipped_done"] += 1
                return
            done.add(digest)
            stats["processed"] += 1
            sink.result(res)

        def on_crash(it: SourceItem) -> None:
            handle({"path": it.path, "source": it.source, "stage": "worker", "error": "worker process died"})

        args = (n_captions, timeout)
        if ray:
            backend = "ray"
            _run_ray(_chunks(todo, chunk_size), workers, args, handle, on_crash)
        elif workers == 1:
            backend = "serial"
            for it in todo:
                handle(process_item(it, *args))
        else:
            backend = "process"
            _run_pool(_chunks(todo, chunk_size), workers, args, handle, on_crash)
        bar.close()
    finally:
        sink.close()

    summary = _assemble(out, progress)
    summary.update(
        duplicates=stats["duplicates"], failures=_count_failures(out),
        failures_this_run=stats["failures_this_run"], processed_this_run=stats["processed"],
        skipped_done=stats["skipped_done"], skipped_failed=stats["skipped_failed"],
        files_listed=len(items), workers=workers, backend=backend, seconds=round(time.time() - t0, 2),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_card(out, summary, sources)
    log.info("dataset in %s: %d pieces, %d clips, %d QA pairs, %d duplicates, %d failures, %.1f s", out,
             summary["pieces"], summary["clips"], summary["qa_pairs"], summary["duplicates"],
             summary["failures"], summary["seconds"])
    return summary


# ---------------------------------------------------------------------------------------------- Parquet

def _iter_results(out: Path) -> Iterator[dict]:
    """Finished files from every run's part file, each content hash once (the first written)."""
    seen: set[str] = set()
    for part in sorted((out / "parts").glob("part-*.jsonl")):
        for res in _read_jsonl(part):
            digest = res.get("content_hash")
            if digest and digest not in seen and isinstance(res.get("rows"), list):
                seen.add(digest)
                yield res


def _kind(v):
    """The column kind of one value: None, 'bool', 'int', 'float', 'str', ('list', kind) or 'json'."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        elem = None
        for x in v:
            k = _kind(x)
            if not isinstance(k, str) or k == "json":
                return "json"  # lists of lists or dicts
            elem = _merge(elem, k)
            if elem == "json":
                return "json"
        return ("list", elem)
    return "json"


def _merge(a, b):
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    if isinstance(a, tuple) and isinstance(b, tuple):
        inner = _merge(a[1], b[1])
        return "json" if inner == "json" else ("list", inner)
    return "json"


def _arrow_type(kind):
    import pyarrow as pa

    if kind == "qa":
        return pa.list_(pa.struct([(k, pa.string()) for k in QA_FIELDS]))
    if isinstance(kind, tuple):
        return pa.list_(_arrow_type(kind[1] or "str"))
    return {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}.get(kind, pa.string())


def _cell(v, kind):
    if v is None:
        return None
    if kind == "json":
        return json.dumps(v, ensure_ascii=False)
    if kind == "float":
        return float(v)
    if isinstance(kind, tuple) and kind[1] == "float":
        return [None if x is None else float(x) for x in v]
    return v


def _assemble(out: Path, progress: bool = True) -> dict:
    """Two passes over the part files: the column kinds of all rows, then Parquet per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds: dict[str, object] = {c: None for c in LEAD_COLUMNS}
    counts: dict = defaultdict(lambda: defaultdict(Counter))
    for res in _iter_results(out):
        for row in res["rows"]:
            for k, v in row.items():
                kinds[k] = _merge(kinds.get(k), _kind(v))
            c = counts[row.get("source", "")][final_split(row)]
            c["pieces" if row.get("unit") == "piece" else "clips"] += 1
            c["qa_pairs"] += len(row.get("qa") or [])
            c["captions"] += len(row.get("captions") or [])
    kinds.update(source="str", split="str", unit="str", clip="str", clip_start="float", clip_end="float",
                 path="str", content_hash="str", license="str", captions=("list", "str"), qa="qa")
    schema = pa.schema([(k, _arrow_type(kind)) for k, kind in kinds.items()])

    writers = {s: pq.ParquetWriter(out / f"{s}.parquet.tmp", schema) for s in SPLITS}
    buffers: dict[str, list[dict]] = {s: [] for s in SPLITS}
    split_rows = Counter()

    def flush(split: str) -> None:
        rows = buffers[split]
        cols = {k: [_cell(r.get(k), kind) for r in rows] for k, kind in kinds.items()}
        writers[split].write_table(pa.table(cols, schema=schema))
        buffers[split] = []

    try:
        for res in _iter_results(out):
            for row in res["rows"]:
                split = final_split(row)
                buffers[split].append({**row, "split": split})
                split_rows[split] += 1
                if len(buffers[split]) >= ROW_GROUP:
                    flush(split)
        for split in buffers:
            if buffers[split]:
                flush(split)
    finally:
        for w in writers.values():
            w.close()
    written = {}
    for split in writers:
        tmp, final = out / f"{split}.parquet.tmp", out / f"{split}.parquet"
        if split_rows[split]:
            os.replace(tmp, final)
            written[split] = str(final)
        else:
            # datasets refuses a data file without rows ("corresponds to no data"): leave the split out
            tmp.unlink()
            final.unlink(missing_ok=True)

    per_source = {src: {sp: dict(c) for sp, c in by_split.items()} for src, by_split in counts.items()}
    totals: Counter = Counter()
    for by_split in counts.values():
        for c in by_split.values():
            totals.update(c)
    return {
        "out_dir": str(out),
        "data_files": written,
        "sources": per_source,
        "pieces": totals["pieces"], "clips": totals["clips"], "rows": totals["pieces"] + totals["clips"],
        "qa_pairs": totals["qa_pairs"], "captions": totals["captions"],
        "columns": {k: str(_arrow_type(kind)) for k, kind in kinds.items()},
        "json_columns": [k for k, kind in kinds.items() if kind == "json"],
    }


# ---------------------------------------------------------------------------------------------- card

def _write_card(out: Path, summary: dict, sources: Iterable) -> None:
    splits = list(summary["data_files"])
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: {split}.parquet"]
    files = ", ".join(f'"{split}": "{out}/{split}.parquet"' for split in splits)
    lines += [
        "license: other",
        "tags:",
        "- midi",
        "- symbolic-music",
        "---",
        "",
        "# midilm MIDI-text dataset",
        "",
        "Built by `midilm.annotate.dataset.build_dataset`. One row per piece (`unit == \"piece\"`) and per",
        "20-second clip (`unit == \"clip\"`, `clip` in start/middle/end, times in `clip_start`/`clip_end`).",
        "Captions and question-answer pairs are generated from the analysis features of each row; Lakh rows",
        "keep their MidiCaps caption first in `captions` (piece rows only).",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset(\"parquet\", data_files={{{files}}})",
        "```",
        "",
        "## Contents",
        "",
        "| source | licence | split | pieces | clips | QA pairs |",
        "|---|---|---|---|---|---|",
    ]
    licences = {getattr(s, "name", ""): getattr(s, "license", "") for s in sources}
    for src, by_split in sorted(summary["sources"].items()):
        for split, c in sorted(by_split.items(), reverse=True):
            lines.append(f"| {src} | {licences.get(src, '') or 'see rows'} | {split} | {c.get('pieces', 0)} | "
                         f"{c.get('clips', 0)} | {c.get('qa_pairs', 0)} |")
    lines += [
        "",
        f"Totals: {summary['pieces']} pieces, {summary['clips']} clips, {summary['qa_pairs']} QA pairs. "
        f"{summary['duplicates']} duplicate files (same SHA-1 of the bytes) were dropped, keeping the first; "
        f"{summary['failures']} files could not be read or annotated (see errors.jsonl).",
        "",
        "Each row carries the licence of its source in `license`: respect it when redistributing.",
        "",
        "## Held-out split",
        "",
        "- POP909: song number divisible by 10.",
        "- Nottingham: data row of index.csv (from 0) divisible by 10.",
        "- music21 corpus: SHA-1 of the corpus-relative file path with forward slashes "
        "(e.g. `bach/bwv66.6.mxl`, no work number) ends in `0`.",
        "- Lakh MIDI: MD5 file name starting with `f`.",
        "- Groove MIDI: its own `test` rows (its `validation` rows count as training files here).",
        "- freedoom, openmsx, openscore-quartets: SHA-1 of the path relative to the folder ends in `0`.",
        "- Everything else: SHA-1 of the file bytes ends in `0`.",
        "",
        "## Validation split",
        "",
        "Carved out of the training files: SHA-1 of `validation:` + the file's content hash (`content_hash`,",
        "the SHA-1 of its bytes) ends in `0` (1 in 16). Deterministic and independent of paths and source",
        "order, so it stays the same across rebuilds. Choose checkpoints and settings on it; keep `test` for",
        "the final figures.",
        "",
        "## Columns",
        "",
        "| column | type |",
        "|---|---|",
    ]
    lines += [f"| {k} | {t} |" for k, t in summary["columns"].items()]
    if summary["json_columns"]:
        lines += ["", "These columns hold JSON text (decode with `json.loads`): "
                  + ", ".join(f"`{c}`" for c in summary["json_columns"]) + "."]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_rows(out_dir: str | Path, split: str = "train") -> list[dict]:
    """The rows of one split ("train", "validation" or "test") as dicts with JSON columns decoded (a
    convenience for small datasets). A dataset built before the validation split existed has no
    validation.parquet: asking for it raises FileNotFoundError with the rebuild hint."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    if split == "validation" and not (out / "validation.parquet").exists():
        raise FileNotFoundError(f"{out} has no validation split: rebuild it with `midilm dataset build` "
                                "(the validation split is carved out of train when the Parquet files are written)")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = pq.read_table(out / f"{split}.parquet").to_pylist()
    for row in rows:
        for c in summary.get("json_columns", []):
            if row.get(c) is not None:
                row[c] = json.loads(row[c])
    return rows



def pack_for_training(dataset_dir: str | Path, out_dir: str | Path, splits: Iterable[str] = ("train", "validation"),
                      progress: bool = True) -> dict:
    """A compact, self-contained copy of a dataset for training on another machine: the piece rows of
    `splits` with their AMT events in a list<uint32> column `events` (a whole piece's onset times are
    absolute ticks, beyond 2**16 after 11 minutes; zstd keeps the file small), so no MIDI file is needed
    there; clip rows are left out (the recipe trains on whole pieces). Writes `<split>.parquet` (zstd) and
    a `summary.json` that `load_rows` reads. Returns the summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from midilm.codecs.amt.encode import encode_midi
    from midilm.errors import MidilmError

    src, out = Path(dataset_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
    packed: dict = {"packed_from": str(src), "json_columns": summary.get("json_columns", []), "data_files": {},
                    "pieces": {}, "events": {}, "skipped": {}}
    for split in splits:
        table = pq.read_table(src / f"{split}.parquet")
        table = table.filter(pa.compute.equal(table["unit"], "piece"))
        events, keep = [], []
        n_rows = table.num_rows
        for i, path in enumerate(tqdm(table["path"].to_pylist(), desc=f"packing {split}", disable=not progress)):
            try:
                ids = encode_midi(path)
            except (MidilmError, OSError):
                continue
            events.append(ids)
            keep.append(i)
        table = table.take(pa.array(keep, pa.int64())).append_column("events", pa.array(events, pa.list_(pa.uint32())))
        pq.write_table(table, out / f"{split}.parquet", compression="zstd")
        packed["data_files"][split] = str(out / f"{split}.parquet")
        packed["pieces"][split] = len(keep)
        packed["events"][split] = sum(len(e) for e in events) // 3
        packed["skipped"][split] = n_rows - len(keep)  # files that no longer read
    (out / "summary.json").write_text(json.dumps(packed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return packed


def family_stats(dataset_dir: str | Path, split: str = "train") -> dict:
    """Per GM family (and drums): how many pieces of `split` use it and how many notes it plays, with the
    programs seen. Reads the AMT events of a packed dataset (`pack_for_training`) or encodes the MIDI files.
    Returns {"pieces": n, "notes": n, "families": {family: {"pieces", "notes", "programs": {program: notes}}}}."""
    import numpy as np

    from midilm.codecs.amt import vocab as V
    from midilm.music.gm import family

    rows = [r for r in load_rows(dataset_dir, split) if r.get("unit", "piece") == "piece"]
    fams: dict[str, dict] = {}
    total_notes = 0
    for r in rows:
        events = r.get("events")
        if events is None:
            from midilm.codecs.amt.encode import encode_midi
            from midilm.errors import MidilmError

            try:
                events = encode_midi(r["path"])
            except (MidilmError, OSError):
                continue
        notes = np.asarray(events, dtype=np.int64).reshape(-1, 3)[:, 2] - V.NOTE_OFFSET
        notes = notes[(notes >= 0) & (notes < V.MAX_NOTE)]
        programs, counts = np.unique(notes // V.MAX_PITCH, return_counts=True)
        total_notes += int(counts.sum())
        seen = set()
        for prog, n in zip(programs.tolist(), counts.tolist()):
            f = fams.setdefault(family(prog), {"pieces": 0, "notes": 0, "programs": Counter()})
            f["notes"] += n
            f["programs"][prog] += n
            if family(prog) not in seen:
                f["pieces"] += 1
                seen.add(family(prog))
    for f in fams.values():
        f["programs"] = dict(sorted(f["programs"].items()))
    ordered = dict(sorted(fams.items(), key=lambda kv: -kv[1]["notes"]))
    return {"split": split, "pieces": len(rows), "notes": total_notes, "families": ordered}

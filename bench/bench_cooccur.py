"""cooccur stage throughput, shuffle and memory against a single-process NumPy baseline.

    python bench/bench_cooccur.py                # en-open (12.9M ids) + 200M-token synthetic
    python bench/bench_cooccur.py --quick        # en-open only

For each corpus: vocab + encode are run (or skipped when current) in
``bench/out/runs/NAME``, then the cooccur stage is timed on local[2] with
``spark.driver.memory=4g`` (in local mode the driver JVM is the executor). Reported:
tokens/s (stage wall time, Spark start-up excluded), non-zeros, partial entries,
shuffle bytes (Spark's status store), output bytes, the largest Python task's peak
RSS and the peak RSS of the whole process tree (driver, JVM, Python workers).

Baseline, same corpus, same invocation: the same counting kernel in one process,
with no Spark (``count_arrow_lists`` over the corpus files, then one
``merge_sorted_blocks`` of all partials): what a careful single-machine NumPy
implementation does. It holds every partial in memory, so on the synthetic corpus
it runs on the first ``--baseline-max-tokens`` ids and its rate is per token. On
en-open the Spark matrix is checked entry for entry against the baseline's.
Writes the ``cooccur`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, SHARED, PeakRSS, command_line, machine, synth_corpus, update_section


def load_avg() -> float:
    return os.getloadavg()[0]


def config(path: Path, window: int, memory_mb: int):
    from embedpipe.config import load_config

    return load_config(
        None,
        [
            f"input.path={path}",
            "vocab.tokenizer=whitespace",
            f"cooccur.window={window}",
            f"cooccur.memory_mb={memory_mb}",
        ],
    )


def run_dir(name: str):
    """bench/out/runs/cooc-NAME, seeded from the vocab-encode bench's run when present."""
    from embedpipe.runs import RunDir

    target = OUT / "runs" / f"cooc-{name}"
    source = OUT / "runs" / name
    if not target.exists() and (source / "manifest.json").exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("cooc", "_tmp"))
    return RunDir(str(target))


def session():
    from embedpipe.config import SparkConfig
    from embedpipe.spark import build_session

    return build_session(
        SparkConfig(
            master="local[2]",
            conf={
                "spark.driver.memory": "4g",
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": "4",
            },
        )
    )


def part_upstream(args) -> dict:
    """vocab + encode (skipped when current)."""
    from embedpipe.stages import encode, vocab

    cfg, run = config(args.path, args.window, args.memory_mb), run_dir(args.name)
    spark = session()
    try:
        vocab.run(spark, cfg, run)
        encode.run(spark, cfg, run)
    finally:
        spark.stop()
    return {"kept": run.record("encode")["counts"]["kept_tokens"]}


class TreeCPU:
    """CPU seconds (user + system) of this process's children: the Spark JVM and its
    Python workers, counted from ``start()`` (processes started later count from 0)."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.base: dict[int, float] = {}

    def _now(self) -> dict[int, tuple[str, float]]:
        import psutil

        out = {}
        for p in self.me.children(recursive=True):
            try:
                t = p.cpu_times()
                out[p.pid] = ("jvm" if "java" in p.name() else "python", t.user + t.system)
            except psutil.Error:
                continue
        return out

    def start(self) -> None:
        self.base = {pid: cpu for pid, (_, cpu) in self._now().items()}

    def read(self) -> dict[str, float]:
        out = {"jvm": 0.0, "python": 0.0}
        for pid, (kind, cpu) in self._now().items():
            out[kind] += cpu - self.base.get(pid, 0.0)
        return out


def warmup_run(args):
    """A small run directory (the vendored sample) for the untimed warm-up job."""
    from embedpipe.config import load_config
    from embedpipe.runs import RunDir

    sample = Path(__file__).resolve().parents[1] / "data" / "pd-sample.txt.gz"
    cfg = load_config(
        None,
        [
            f"input.path={sample}",
            "vocab.tokenizer=whitespace",
            f"cooccur.window={args.window}",
            f"cooccur.memory_mb={args.memory_mb}",
        ],
    )
    return cfg, RunDir(str(OUT / "runs" / "cooc-warmup"))


def part_stage(args) -> dict:
    """The cooccur stage in a fresh process (its JVM and workers start clean).

    First an untimed warm-up: vocab, encode and cooccur on the small vendored sample,
    so that the JVM has loaded Spark's classes and compiled its hot paths and the
    Python workers have imported and loaded the compiled kernels, as in a pipeline
    run where vocab and encode ran first in the same session. Its time is reported
    apart, like the session start-up.
    """
    from embedpipe.log import setup
    from embedpipe.stages import cooccur, encode, vocab

    setup()
    cfg, run = config(args.path, args.window, args.memory_mb), run_dir(args.name)
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        spark = session()
        startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            if args.warmup:
                wcfg, wrun = warmup_run(args)
                vocab.run(spark, wcfg, wrun)
                encode.run(spark, wcfg, wrun)
                cooccur.run(spark, wcfg, wrun, force=True)
            warmup = time.perf_counter() - t0
            cpu = TreeCPU()
            peak.peak = 0  # the stage's own peak
            load_before = load_avg()
            cpu.start()
            c0 = time.process_time()
            res = cooccur.run(spark, cfg, run, force=True)
            used = cpu.read()
            used["driver"] = time.process_time() - c0
            load_after = load_avg()
        finally:
            spark.stop()
    c = res.record["counts"]
    return {
        "seconds": res.seconds,
        "startup": startup,
        "warmup": warmup,
        "tokens": c["tokens"],
        "nnz": c["nnz"],
        "partials": c["partial_entries"],
        "shuffle": c["shuffle_bytes"],
        "bytes": c["bytes"],
        "task_rss": c["peak_task_rss"],
        "peak": peak.peak,
        "S": c["shards"],
        "V": c["vocab_size"],
        "map_tasks": c["map_tasks"],
        "timings": res.record["timings"],
        "cpu": used,
        "load": [load_before, load_after],
    }


def part_baseline(args) -> dict:
    """The kernel in one process over the corpus files, then one merge of all partials."""
    import pyarrow.parquet as pq

    from embedpipe.kernels import cooccur as K

    run = run_dir(args.name)
    V = run.record("vocab")["counts"]["vocab_size"]
    files = sorted(glob.glob(os.path.join(run.path("corpus"), "*.parquet")))
    lists, n = [], 0
    for f in files:
        for chunk in pq.read_table(f, columns=["ids"]).column("ids").chunks:
            if args.max_tokens and n >= args.max_tokens:
                break
            lists.append(chunk)
            n += len(chunk.values)
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        blocks = list(
            K.count_arrow_lists(lists, V, args.window, integer_units=True, memory_mb=args.memory_mb)
        )
        t1 = time.perf_counter()
        partials = sum(k.size for k, _ in blocks)
        keys, values = K.merge_sorted_blocks(blocks)
        del blocks
        values /= K.weight_denominator(args.window)
        t2 = time.perf_counter()
    out = {
        "tokens": n,
        "count_s": t1 - t0,
        "merge_s": t2 - t1,
        "seconds": t2 - t0,
        "partials": partials,
        "nnz": int(keys.size),
        "peak": peak.peak,
    }
    if not args.max_tokens:
        out["check"] = check_equal(run, keys, values, V)
    return out


def read_costs(run, max_shards: int = 4, reps: int = 3) -> dict:
    """Acceptance 4: reading a shard as CSR against reading its Parquet file (best of reps)."""
    import pyarrow.parquet as pq

    from embedpipe import cooccur as C

    meta = C.info(run)
    ratios, parquet_s, csr_s = [], 0.0, 0.0
    for k in range(min(meta.shards, max_shards)):
        path = C.shard_uri(run, k)
        t_pq = t_csr = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            pq.read_table(path)
            t1 = time.perf_counter()
            C.read_shard(run, k)
            t2 = time.perf_counter()
            t_pq, t_csr = min(t_pq, t1 - t0), min(t_csr, t2 - t1)
        ratios.append(t_csr / t_pq)
        parquet_s += t_pq
        csr_s += t_csr
    return {"shards": len(ratios), "max_ratio": max(ratios), "parquet_s": parquet_s, "csr_s": csr_s}


def check_equal(run, keys: np.ndarray, values: np.ndarray, V: int) -> str:
    """Every entry of the Spark matrix equals the baseline's (float32)."""
    from embedpipe import cooccur as C
    from embedpipe.kernels import cooccur as K

    coo = C.read_matrix(run).tocoo()
    same = (
        coo.nnz == keys.size
        and np.array_equal(K.ij_to_keys(coo.row, coo.col, V), keys)
        and np.array_equal(coo.data, values.astype(np.float32))
    )
    if not same:
        raise SystemExit("Spark matrix differs from the single-process baseline")
    return (
        f"whole en-open corpus, exact: all {coo.nnz:,} entries of the Spark matrix equal the "
        "single-process kernel + merge (float32)"
    )


def part_glove(args) -> dict:
    """Stanford GloVe's ``cooccur`` (a binary built from stanfordnlp/GloVe src/cooccur.c) on
    the same text and vocabulary; checks that it gives our matrix (lines, 1/d, OOV skipped)."""
    import gzip

    from embedpipe import cooccur as C
    from embedpipe.stages.vocab import read_vocab

    run = run_dir(args.name)
    work = OUT / "glove"
    work.mkdir(parents=True, exist_ok=True)
    vocab = read_vocab(run)
    vocab_file = work / f"vocab-{args.name}.txt"
    # GloVe numbers words by their line in the vocab file: id + 1 here.
    vocab_file.write_text(
        "".join(
            f"{t} {c}\n"
            for t, c in zip(
                vocab.column("token").to_pylist(), vocab.column("count").to_pylist(), strict=True
            )
        )
    )
    text = work / f"{args.name}.txt"
    if not text.exists():
        opener = gzip.open if str(args.path).endswith(".gz") else open
        with opener(args.path, "rb") as src, open(text, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
    out = work / f"cooc-{args.name}.bin"
    with PeakRSS() as peak, open(text, "rb") as stdin, open(out, "wb") as stdout:
        t0 = time.perf_counter()
        subprocess.run(
            [
                args.glove,
                "-verbose",
                "0",
                "-window-size",
                str(args.window),
                "-memory",
                "4.0",
                "-vocab-file",
                str(vocab_file),
                "-overflow-file",
                str(work / "overflow"),
            ],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        seconds = time.perf_counter() - t0
    rec = np.fromfile(out, dtype=[("i", "<i4"), ("j", "<i4"), ("x", "<f8")])
    out.unlink()
    V = len(vocab)
    g_keys = (rec["i"].astype(np.int64) - 1) * V + (rec["j"] - 1)
    order = np.argsort(g_keys)
    g_keys, g_x = g_keys[order], rec["x"][order]
    coo = C.read_matrix(run).tocoo()
    o_keys = coo.row.astype(np.int64) * V + coo.col
    order = np.argsort(o_keys)
    o_keys, o_x = o_keys[order], coo.data[order].astype(np.float64)
    # GloVe's windows cross the cuts encode makes in lines longer than
    # encode.max_doc_tokens; ours stop there. Add those pairs to ours, then compare.
    cut_keys, cut_x, cuts = cross_cut_pairs(run, args.window, V)
    keys = np.concatenate([o_keys, cut_keys])
    x = np.concatenate([o_x, cut_x])
    order = np.argsort(keys, kind="stable")
    keys, x = keys[order], x[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    keys, x = keys[starts], np.add.reduceat(x, starts)
    same_keys = keys.size == g_keys.size and np.array_equal(keys, g_keys)
    rel = float(np.max(np.abs(x - g_x) / g_x)) if same_keys else float("nan")
    return {
        "seconds": seconds,
        "peak": peak.peak,
        "nnz": int(rec.size),
        "ours": int(o_keys.size),
        "cuts": cuts,
        "cut_entries": int(np.unique(cut_keys).size),
        "same_entries": bool(same_keys),
        "max_rel_diff": rel,
        "tokens": run.record("vocab")["counts"]["tokens"],
    }


def cross_cut_pairs(run, window: int, V: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(keys, x, cuts): the window pairs that cross the cuts of lines encode split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(run.path("corpus"), "*.parquet")))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    docs = table.column("doc").to_numpy()
    order = np.argsort(docs, kind="stable")  # pieces of a line stay in file order
    docs = docs[order]
    multi = np.flatnonzero(np.diff(docs) == 0)
    keys, xs, cuts = [], [], 0
    rows = table.column("ids").take(pa.array(order))
    for d in np.unique(docs[multi]):
        where = np.flatnonzero(docs == d)
        pieces = [np.asarray(rows[int(r)].values) for r in where]
        line = np.concatenate(pieces)
        for c in np.cumsum([len(p) for p in pieces])[:-1]:
            cuts += 1
            for p in range(max(0, c - window), c):
                for q in range(c, min(len(line), p + window + 1)):
                    w = 1.0 / (q - p)
                    keys += [int(line[p]) * V + int(line[q]), int(line[q]) * V + int(line[p])]
                    xs += [w, w]
    return np.array(keys, np.int64), np.array(xs, np.float64), cuts


def part(kind: str, name: str, path: Path, args, max_tokens: int = 0) -> dict:
    """Run one part in a subprocess; its last stdout line is a JSON result."""
    cmd = [
        sys.executable,
        __file__,
        "--part",
        kind,
        "--name",
        name,
        "--path",
        str(path),
        "--window",
        str(args.window),
        "--memory-mb",
        str(args.memory_mb),
        "--max-tokens",
        str(max_tokens),
        "--glove",
        str(args.glove or ""),
        *([] if args.warmup else ["--no-warmup"]),
    ]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="en-open only")
    ap.add_argument("--synth-tokens", type=int, default=200_000_000)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--memory-mb", type=int, default=512, help="cooccur.memory_mb")
    ap.add_argument("--baseline-max-tokens", type=int, default=20_000_000)
    ap.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="time the stage as the first job of a cold JVM",
    )
    ap.add_argument(
        "--glove",
        help="a Stanford GloVe `cooccur` binary: measure it on en-open "
        "in the same run and compare its matrix with ours",
    )
    ap.add_argument(
        "--part", choices=["upstream", "stage", "baseline", "glove"], help=argparse.SUPPRESS
    )
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--max-tokens", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        fn = {
            "upstream": part_upstream,
            "stage": part_stage,
            "baseline": part_baseline,
            "glove": part_glove,
        }
        print(json.dumps(fn[args.part](args)))
        return 0
    en_open = SHARED / "corpora" / "en-open.tok.txt.gz"
    if not en_open.exists():
        print(f"{en_open} not found: this benchmark needs ../shared", file=sys.stderr)
        return 1
    corpora = [("en-open.tok.txt.gz", en_open, "en-open")]
    if not args.quick:
        corpora.append(
            (
                f"synth {args.synth_tokens / 1e6:.0f}M tokens",
                synth_corpus(args.synth_tokens),
                "synth",
            )
        )
    rows, notes, glove_rows, details = [], [], [], []
    for label, path, name in corpora:
        part("upstream", name, path, args)
        ours = part("stage", name, path, args)
        rc = read_costs(run_dir(name))
        notes.append(
            f"{label}: reading a shard as CSR (`embedpipe.cooccur.read_shard`, with its "
            f"checks) takes at most {rc['max_ratio']:.2f}x the time pyarrow takes to read the "
            f"shard's Parquet file (first {rc['shards']} shards: {rc['csr_s']:.2f} s against "
            f"{rc['parquet_s']:.2f} s; criterion <= 2x)"
        )
        cap = 0 if name == "en-open" else args.baseline_max_tokens
        base = part("baseline", name, path, args, cap)
        if "check" in base:
            notes.append(base["check"])
            print(notes[-1])
        if args.glove and name == "en-open":
            g = part("glove", name, path, args)
            glove_rows.append(
                f"| Stanford GloVe `cooccur` (1 thread, -memory 4.0), same text and vocabulary "
                f"| {g['seconds']:.1f} s | {g['tokens'] / g['seconds'] / 1e6:.2f}M input tokens/s "
                f"| {g['nnz'] / 1e6:.1f}M | {g['peak'] / 2**30:.2f} GiB |"
            )
            notes.append(
                f"Stanford GloVe's `cooccur` on the same text and vocabulary: {g['nnz']:,} "
                f"entries against our {g['ours']:,}; adding to ours the pairs across the "
                f"{g['cuts']} cuts encode made in lines longer than encode.max_doc_tokens "
                f"({g['cut_entries']} entries; GloVe's windows cross them, ours stop) gives "
                f"{'exactly its' if g['same_entries'] else 'NOT its'} (i, j) entries, largest "
                f"relative difference of x (our float32 vs its float64) {g['max_rel_diff']:.1e}"
            )
            print(glove_rows[-1], notes[-1])
        rate = ours["tokens"] / ours["seconds"]
        tm = ours["timings"]
        cpu = ours["cpu"]
        total_cpu = cpu["jvm"] + cpu["python"] + cpu["driver"]
        base_rate = base["tokens"] / base["seconds"]
        per_entry = ours["shuffle"] / max(ours["partials"], 1)
        rows.append(
            f"| {label} | {ours['tokens'] / 1e6:.1f}M | {ours['V']:,} | {ours['S']} "
            f"| {ours['map_tasks']} | {ours['seconds']:.1f} s | **{rate / 1e6:.2f}M** "
            f"| {total_cpu:.0f} s ({cpu['python']:.0f} + {cpu['jvm']:.0f} + "
            f"{cpu['driver']:.0f}) | {total_cpu / ours['tokens'] * 1e6:.2f} s "
            f"| {ours['tokens'] / (total_cpu / 2) / 1e6:.2f}M "
            f"| {ours['nnz'] / 1e6:.1f}M | {ours['partials'] / 1e6:.1f}M "
            f"| {ours['shuffle'] / 2**20:.0f} MiB ({per_entry:.1f} B/entry) "
            f"| {ours['bytes'] / 2**20:.0f} MiB | {ours['task_rss'] / 2**30:.2f} GiB "
            f"| {ours['peak'] / 2**30:.2f} GiB | {base_rate / 1e6:.2f}M "
            f"({base['tokens'] / 1e6:.0f}M tokens, {base['count_s']:.1f} + {base['merge_s']:.1f}"
            f" s, {base['peak'] / 2**30:.1f} GiB) | {ours['load'][0]:.1f} / {ours['load'][1]:.1f} |"
        )
        details.append(
            f"{label}: Spark start-up {ours['startup']:.1f} s, warm-up job {ours['warmup']:.1f} s "
            "(both untimed); Python task CPU: map kernel "
            f"{tm['map_kernel_cpu_seconds']:.1f} s, packing {tm['map_blob_cpu_seconds']:.1f} s, "
            f"map total {tm['map_task_cpu_seconds']:.1f} s, "
            f"reduce {tm['reduce_task_cpu_seconds']:.1f} s "
            f"(of which Parquet writing {tm['reduce_write_cpu_seconds']:.1f} s); "
            f"JVM task threads {tm['jvm_cpu_seconds']:.1f} s."
        )
        print(rows[-1], json.dumps(ours["timings"]), flush=True)
    md = [
        "## cooccur (issue 5)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}  ",
        f"Settings: window {args.window}, harmonic, cooccur.memory_mb {args.memory_mb}, "
        "whitespace tokenizer, min_count 5, local[2], spark.driver.memory 4g (the executor in "
        "local mode), default cooccur.shards (chosen from the data size).",
        "Time = the cooccur stage's wall time"
        + (
            ", after an untimed warm-up job on the small vendored sample in the same session "
            "(JVM class loading and JIT, Python workers' imports: what vocab and encode do "
            "before cooccur in a pipeline run)"
            if args.warmup
            else ", first job of a cold JVM"
        )
        + "; Spark start-up, vocab and encode excluded. CPU = CPU seconds (user + system) "
        "spent during the stage by the JVM and its Python workers, plus the driver process "
        "(Python workers + JVM + driver); the machine is shared, so wall times carry other "
        "jobs' load (load = 1-minute load average before / after), and 'CPU-bound rate' = "
        "tokens / (CPU / 2) is what the two cores would give if the stage had them to "
        "itself. Shuffle = Spark's shuffle write bytes (varint-packed partials after Spark's "
        "lz4). Task RSS = the largest peak RSS of a Python worker; peak RSS = the stage's "
        "whole process tree (driver, JVM with a 4g heap, Python workers). Baseline: the same "
        "counting kernel in one process without Spark, then one in-memory merge of all "
        "partials (on synth, the first tokens shown).",
        "",
        "| corpus | tokens | V | S | map tasks | time | tokens/s | CPU (py + JVM + driver) "
        "| CPU per 1M tokens | CPU-bound rate, 2 cores | non-zeros | partial entries | shuffle "
        "| output | task RSS | peak RSS | 1-process baseline tokens/s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *details,
        "",
        *(
            [
                "Peer in the same run (en-open):",
                "",
                "| peer | time | tokens/s | non-zeros | peak RSS |",
                "|---|---|---|---|---|",
                *glove_rows,
                "",
            ]
            if glove_rows
            else []
        ),
        "Quoted in the issue (same machine kind, not this run): Stanford GloVe's `cooccur` "
        "on en-open, window 10: 10.2 s = 1.28M tokens/s on one thread, 1.16 GB peak RSS, "
        "31.3M non-zeros, plus 8.2 s for its `shuffle`; naive Spark (explode pairs + "
        "groupBy) ~0.3M tokens/s.",
        "",
        *[f"* {n}." for n in notes],
    ]
    update_section("cooccur", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Subword (fastText) word2vec against gensim's FastText on en-open (issue 9).

    .venv/bin/python bench/bench_subwords.py                  # everything, stored as it goes
    .venv/bin/python bench/bench_subwords.py --max-lines 20000  # a dry run on the first lines
    .venv/bin/python bench/bench_subwords.py --render         # RESULTS.md section only

Settings (issue 9): ``../shared/corpora/en-open.tok.txt.gz``, whitespace tokens,
min_count 5, skip-gram, dim 100, window 5, negative 5, sample 1e-3, 5 epochs, seed 1,
n-grams 3..6 in 2,000,000 buckets.

* embedpipe: the word2vec stage with ``word2vec.subwords = true``, S = 2 on local[2];
  also the word-only stage (same settings, ``subwords = false``) for acceptance 2.
* gensim: ``FastText(sg=1, workers=2, min_n=3, max_n=6, bucket=2_000_000, ...)`` in a
  child process (its peak RSS and CPU seconds are its own, not the Spark JVM's).

Wall = the training call (embedpipe: the word2vec stage incl. its corpus load and
n-gram table, excl. Spark start-up and vocab/encode; gensim: incl. its vocabulary scan).
Before the first timed embedpipe run the Spark session trains once, untimed, on the
first 20,000 lines (JVM warm-up, Python workers started: Spark start-up). The machine
is shared: the 1-minute load average (before→mean→after) and the CPU seconds of the
whole process tree are stored next to every wall time.

Rare / unseen words (held out). Half of the WS353 + SimLex-999 words that occur 5 to
1,000 times in en-open (seeded choice) are removed from the corpus (every occurrence
deleted from its line), both systems are trained on what is left with the same
settings, and the similarity pairs that contain a held-out word are scored with the
held-out words' vectors built from their character n-grams. Reported per dataset:
pairs, coverage (pairs both of whose words get a vector), Spearman ρ of each system,
ρ of both on exactly the same pairs, and as the ceiling the ρ of the full-corpus models
(the words seen) on those pairs. A word-only model covers none of them.

Every measurement goes to ``bench/out/subwords/results.json`` as soon as it finishes
and the ``subwords`` section of RESULTS.md is re-rendered from everything stored.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (
    OUT,
    SHARED,
    CpuMeter,
    PeakRSS,
    Usage,
    command_line,
    head_file,
    machine,
    update_section,
)

CORPUS = SHARED / "corpora" / "en-open.tok.txt.gz"
WORK = OUT / "subwords"
RESULTS_JSON = WORK / "results.json"
SETTINGS = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "seed": 1, "epochs": 5,
            "sample": 1e-3, "minn": 3, "maxn": 6, "buckets": 2_000_000}  # fmt: skip
#: Held-out words: eval words with a corpus count in this band, this share of them.
HOLD_BAND = (5, 1000)
HOLD_SHARE = 0.5
HOLD_SEED = 1


# ------------------------------------------------------------------ data


def similarity_sets() -> dict[str, list[tuple[str, str, float]]]:
    """WS353 and SimLex-999 pairs, lowercased (en-open is lowercase)."""
    from embedpipe import scoring

    paths = {d.name: d.path for d in scoring.default_datasets()}
    return {
        name: [(a.lower(), b.lower(), s) for a, b, s in scoring.read_similarity(paths[name])]
        for name in ("ws353", "simlex999")
    }


def choose_held_out(counts: dict[str, int]) -> list[str]:
    """Seeded half of the eval words whose count lies in HOLD_BAND (sorted)."""
    import numpy as np

    lo, hi = HOLD_BAND
    pairs = [p for ps in similarity_sets().values() for p in ps]
    words = sorted({w for a, b, _ in pairs for w in (a, b) if lo <= counts.get(w, 0) <= hi})
    rng = np.random.default_rng(HOLD_SEED)
    pick = rng.choice(len(words), size=int(len(words) * HOLD_SHARE), replace=False)
    return sorted(words[i] for i in pick)


def write_held_out_corpus(corpus: Path, held: set[str], out: Path) -> int:
    """Copy the corpus without any occurrence of the held-out words; returns tokens removed."""
    removed = 0
    opener = gzip.open if corpus.suffix == ".gz" else open
    tmp = out.with_suffix(".tmp")
    with opener(corpus, "rt", encoding="utf-8") as f, open(tmp, "w", encoding="utf-8") as g:
        for line in f:
            toks = line.split()
            kept = [t for t in toks if t not in held]
            removed += len(toks) - len(kept)
            g.write(" ".join(kept) + "\n")
    tmp.rename(out)
    return removed


# ------------------------------------------------------------------ scoring


def score(vectors: Any) -> dict[str, Any]:
    """WS353 / SimLex ρ, Google analogy 3CosAdd (restrict_vocab 30000) with its semantic and
    syntactic parts, by :mod:`embedpipe.scoring` (in-vocabulary words only)."""
    from embedpipe import scoring

    data = {d.name: d.path for d in scoring.default_datasets()}
    ws = scoring.evaluate_similarity(vectors, data["ws353"])
    sl = scoring.evaluate_similarity(vectors, data["simlex999"])
    an = scoring.evaluate_analogy(vectors, data["google_analogy"], 30000)
    return {"ws353": ws["spearman"], "simlex": sl["spearman"], "analogy": an["accuracy"],
            "analogy_semantic": an["semantic"]["accuracy"],
            "analogy_syntactic": an["syntactic"]["accuracy"], "analogy_covered": an["covered"],
            "analogy_questions": an["questions"]}  # fmt: skip


def pair_cosines(vector_of: Any, pairs: list[tuple[str, str, float]]) -> list[float | None]:
    """Cosine of every pair, None where a word has no vector."""
    import numpy as np

    out: list[float | None] = []
    for a, b, _ in pairs:
        va, vb = vector_of(a), vector_of(b)
        if va is None or vb is None:
            out.append(None)
            continue
        na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
        out.append(float(np.dot(va, vb) / (na * nb)) if na > 0 and nb > 0 else None)
    return out


def held_out_pairs(held: list[str]) -> dict[str, list[tuple[str, str, float]]]:
    hs = set(held)
    return {name: [p for p in pairs if p[0] in hs or p[1] in hs]
            for name, pairs in similarity_sets().items()}  # fmt: skip


def spearman(gold: list[float], model: list[float]) -> float | None:
    import scipy.stats

    return float(scipy.stats.spearmanr(gold, model).statistic) if len(gold) >= 3 else None


# ------------------------------------------------------------------ systems


def prepare(spark: Any, corpus: Path, name: str) -> tuple[Any, list[str], int, dict[str, int]]:
    """vocab + encode of ``corpus`` into bench/out/runs/<name> (skipped when current)."""
    from embedpipe.config import load_config
    from embedpipe.runs import RunDir
    from embedpipe.stages import encode, vocab
    from embedpipe.stages.vocab import read_vocab

    base = [f"input.path={corpus}", "vocab.tokenizer=whitespace",
            f"vocab.min_count={SETTINGS['min_count']}"]  # fmt: skip
    cfg = load_config(None, base)
    run = RunDir(str(OUT / "runs" / name))
    vocab.run(spark, cfg, run)
    rec = encode.run(spark, cfg, run).record
    v = read_vocab(run)
    counts = dict(zip(v.column("token").to_pylist(), v.column("count").to_pylist(), strict=True))
    return run, base, int(rec["counts"]["kept_tokens"]), counts


def ours_config(
    base: list[str], subwords: bool, epochs: int | None = None, seed: int | None = None
) -> Any:
    from embedpipe.config import load_config

    s = {**SETTINGS, **({"seed": seed} if seed is not None else {})}
    return load_config(None, [
        *base, "word2vec.mode=skipgram", "word2vec.partitions=2",
        f"word2vec.epochs={epochs or s['epochs']}", f"word2vec.sample={s['sample']}",
        f"word2vec.subwords={'true' if subwords else 'false'}", f"word2vec.minn={s['minn']}",
        f"word2vec.maxn={s['maxn']}", f"word2vec.buckets={s['buckets']}",
        *(f"word2vec.{k}={s[k]}" for k in ("dim", "window", "negative", "seed")),
    ])  # fmt: skip


def run_ours(
    spark, run, base, n_words, subwords: bool, query: list[str], seed: int | None = None
) -> dict[str, Any]:
    """Train, score; ``query`` words' vectors (None when the model has none) come back too."""
    from embedpipe import fsutil
    from embedpipe.stages import word2vec
    from embedpipe.vectors import Vectors

    cfg = ours_config(base, subwords, seed=seed)
    with PeakRSS() as peak, CpuMeter() as cpu:
        t0 = time.perf_counter()
        word2vec.run(spark, cfg, run, force=True)
        wall = time.perf_counter() - t0
    model = json.loads(fsutil.read_text(run.path("word2vec", word2vec.MODEL_FILE)))
    vec = Vectors.load(run.path("word2vec"))
    out = {
        "system": "embedpipe", "subwords": subwords, "partitions": 2, "wall_s": wall,
        "seed": seed if seed is not None else SETTINGS["seed"],
        "train_s": sum(model["epoch_seconds"]), "load_s": model["load_seconds"],
        "cpu_s": cpu.seconds, "peak_gib": peak.gib, "words": n_words * SETTINGS["epochs"],
        "words_per_s": n_words * SETTINGS["epochs"] / wall, "losses": model["losses"],
        "rounds_per_epoch": model["rounds_per_epoch"],
        "broadcast_bytes": model["exchange_bytes_per_round"]["broadcast"],
        "result_bytes": model["exchange_bytes_per_round"]["results"],
        **({"ngram_rows": model["subwords"]["ngram_rows"],
            "ngram_bytes": model["subwords"]["ngram_matrix_bytes"],
            "ngram_bound_bytes": model["subwords"]["ngram_matrix_bound_bytes"]}
           if subwords else {}),
    }  # fmt: skip
    out.update(score(vec))
    out["query"] = {w: _vector_or_none(vec, w) for w in query}
    return out


def _vector_or_none(vec: Any, word: str) -> list[float] | None:
    from embedpipe.errors import EmbedpipeError

    try:
        return [float(x) for x in vec.vector(word)]
    except (KeyError, EmbedpipeError):
        return None


def gensim_worker(corpus: str, out: str, query_file: str) -> int:
    """Child process: train gensim FastText, write vectors + timings (``--gensim-worker``)."""
    import numpy as np
    from gensim.models import FastText
    from gensim.models.word2vec import LineSentence

    s = SETTINGS
    query = json.loads(Path(query_file).read_text())
    t0 = time.perf_counter()
    model = FastText(
        LineSentence(corpus), vector_size=s["dim"], window=s["window"], min_count=s["min_count"],
        negative=s["negative"], sample=s["sample"], epochs=s["epochs"], workers=2, sg=1,
        seed=s["seed"], min_n=s["minn"], max_n=s["maxn"], bucket=s["buckets"],
    )  # fmt: skip
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    kv = model.wv
    queried = np.stack([kv[w] for w in query]) if query else np.zeros((0, s["dim"]))
    np.savez(out, tokens=np.array(kv.index_to_key), vectors=kv.vectors, query=queried)
    Path(out + ".json").write_text(json.dumps({
        "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_gib": ru.ru_maxrss / 2**20,
    }))  # fmt: skip
    return 0


def run_gensim(corpus: Path, n_words: int, query: list[str], tag: str) -> dict[str, Any]:
    import numpy as np

    from embedpipe.vectors import Vectors

    WORK.mkdir(parents=True, exist_ok=True)
    qfile = WORK / f"query-{tag}.json"
    qfile.write_text(json.dumps(query))
    out = str(WORK / f"gensim-{tag}")
    subprocess.run([sys.executable, __file__, "--gensim-worker", str(corpus), out, str(qfile)],
                   check=True)  # fmt: skip
    timing = json.loads(Path(out + ".json").read_text())
    data = np.load(out + ".npz", allow_pickle=False)
    vec = Vectors([str(t) for t in data["tokens"]], data["vectors"])
    res = {"system": "gensim FastText", "subwords": True, "partitions": 2, **timing,
           "words": n_words * SETTINGS["epochs"],
           "words_per_s": n_words * SETTINGS["epochs"] / timing["wall_s"]}  # fmt: skip
    res.update(score(vec))
    res["query"] = {w: [float(x) for x in data["query"][i]] for i, w in enumerate(query)}
    return res


def warm_up(spark: Any, corpus: Path) -> None:
    """One untimed subword training on the first 20,000 lines (Spark start-up, numba cache)."""
    from embedpipe.stages import word2vec

    if corpus.name.startswith("head-"):
        return
    run, base, _, _ = prepare(spark, head_file(corpus, 20_000, WORK), "sub-head-20000")
    word2vec.run(spark, ours_config(base, True, epochs=1), run, force=True)


# ------------------------------------------------------------------ storage and report


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def store(path: Path, key: str, value: dict[str, Any], extra: dict[str, Any]) -> None:
    data = load_results(path)
    data["runs"][key] = value
    data.update(extra)
    data["machine"] = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    if path == RESULTS_JSON:
        render(data)


def _f(v: Any, spec: str, scale: float = 1.0) -> str:
    return "–" if v is None else format(v * scale, spec)


def _load(r: dict[str, Any]) -> str:
    return "→".join(f"{x:.1f}" for x in r["load"]) if r.get("load") else "–"


def held_out_table(data: dict[str, Any]) -> list[str]:
    """Rare / unseen-word rows from the stored query vectors."""
    runs = data["runs"]
    held = data.get("held_out", [])
    if not held:
        return []
    pairs = held_out_pairs(held)
    systems = [("embedpipe", "embedpipe|sub|heldout", "embedpipe|sub|full"),
               ("gensim FastText", "gensim|heldout", "gensim|full")]  # fmt: skip
    md = [
        "### Rare / unseen words (held out of training)",
        "",
        f"Held out: {len(held)} words (a seeded half of the WS353 + SimLex-999 words seen "
        f"{HOLD_BAND[0]}–{HOLD_BAND[1]} times in en-open), {data.get('held_out_tokens', 0):,} "
        "tokens deleted from the corpus; both systems retrained on the rest with the same "
        "settings. Scored: the pairs containing a held-out word, held-out words' vectors from "
        "their character n-grams. ρ same pairs = both systems on the pairs both cover; "
        "ceiling = the full-corpus models (words seen in training) on the same pairs. A "
        "word-only model covers none of these pairs.",
        "",
        "| dataset | pairs | system | coverage | ρ | ρ same pairs | ceiling ρ (seen) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, plist in pairs.items():
        gold = [p[2] for p in plist]
        cos = {}
        for label, key, full_key in systems:
            if key not in runs:
                continue
            q = runs[key]["query"]
            cos[label] = pair_cosines(lambda w, q=q: _vec(q, w), plist)
            if full_key in runs:
                fq = runs[full_key]["query"]
                cos[label + " full"] = pair_cosines(lambda w, q=fq: _vec(q, w), plist)
        both = [i for i in range(len(plist))
                if all(cos[k][i] is not None for k in cos if not k.endswith(" full"))]  # fmt: skip
        for label, *_ in systems:
            if label not in cos:
                continue
            c = cos[label]
            ok = [i for i, x in enumerate(c) if x is not None]
            rho = spearman([gold[i] for i in ok], [c[i] for i in ok])
            same = spearman([gold[i] for i in both], [c[i] for i in both])
            full = cos.get(label + " full")
            ceil = None
            if full is not None:
                fok = [i for i in both if full[i] is not None]
                ceil = spearman([gold[i] for i in fok], [full[i] for i in fok])
            md.append(f"| {name} | {len(plist)} | {label} | {len(ok) / len(plist):.1%} | "
                      f"{_f(rho, '.3f')} | {_f(same, '.3f')} ({len(both)}) | "
                      f"{_f(ceil, '.3f')} |")  # fmt: skip
    return md


def _vec(q: dict[str, Any], w: str) -> Any:
    import numpy as np

    v = q.get(w)
    return None if v is None else np.asarray(v, dtype=np.float64)


def render(data: dict[str, Any]) -> None:
    """The ``subwords`` section of RESULTS.md from every stored measurement."""
    runs = data["runs"]
    order = [("embedpipe|sub|full", "embedpipe subwords, S=2"),
             ("gensim|full", "gensim FastText, 2 workers"),
             ("embedpipe|word|full", "embedpipe word-only, S=2")]  # fmt: skip
    md = [
        "## Subword vectors (fastText) vs gensim FastText (issue 9)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {data.get('machine', machine())}  ",
        "Corpus: en-open.tok.txt.gz, whitespace tokens, min_count 5; skip-gram, dim 100, "
        "window 5, negative 5, sample 1e-3, 5 epochs, seed 1; n-grams 3–6 characters, "
        "2,000,000 buckets. embedpipe on local[2] with S = 2 (Spark start-up, vocab and encode "
        "excluded; its corpus load and n-gram table included; one untimed warm-up training on "
        "20,000 lines first); gensim FastText with 2 workers in a child process (its vocabulary "
        "scan included). The machine is shared with other jobs: wall times carry their load "
        "(1-minute load average before→mean→after); CPU s = CPU seconds of the training "
        "call's whole process tree (embedpipe: driver, JVM, Python workers; gensim: its "
        "process). Peak RSS: embedpipe's whole tree (driver + JVM + workers), gensim's process. "
        "Scores by `embedpipe.scoring` (in-vocabulary words; analogy restrict_vocab 30000).",
        "",
        "| system | WS353 ρ | SimLex ρ | analogy 3CosAdd | semantic | syntactic | wall | "
        "raw words/s | CPU s | peak RSS | n-gram matrix held (bound) | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in order:
        r = runs.get(key)
        if r is None:
            continue
        gram = "–"
        if r.get("ngram_rows"):
            gram = (f"{r['ngram_rows']:,} rows, {r['ngram_bytes'] / 2**20:.0f} MiB "
                    f"({r['ngram_bound_bytes'] / 2**20:.0f} MiB)")  # fmt: skip
        elif r["system"].startswith("gensim"):
            gram = f"{SETTINGS['buckets']:,} rows, {SETTINGS['buckets'] * 400 / 2**20:.0f} MiB"
        md.append(
            f"| {label} | {_f(r['ws353'], '.3f')} | {_f(r['simlex'], '.3f')} | "
            f"{_f(r['analogy'], '.1f', 100)}% | {_f(r['analogy_semantic'], '.1f', 100)}% | "
            f"{_f(r['analogy_syntactic'], '.1f', 100)}% | {r['wall_s']:.0f} s | "
            f"{r['words_per_s'] / 1e6:.3f}M | {r['cpu_s']:.0f} | {r['peak_gib']:.2f} GiB | "
            f"{gram} | {_load(r)} |"
        )
    a = runs.get("embedpipe|sub|full")
    g = runs.get("gensim|full")
    w = runs.get("embedpipe|word|full")
    md.append("")
    if a and a.get("analogy_covered"):
        md.append(f"Analogy questions covered (all four words among the 30,000 most frequent): "
                  f"{a['analogy_covered']:,} of {a['analogy_questions']:,}.")  # fmt: skip
        md.append("")
    if a and g:
        ok = (a["ws353"] >= g["ws353"] - 0.01 and a["simlex"] >= g["simlex"] - 0.01
              and a["analogy"] >= g["analogy"] - 0.01)  # fmt: skip
        md.append(f"* Acceptance 1 (quality at least gensim FastText within noise, taken as "
                  f"−0.01 ρ / −1 analogy point): WS353 {a['ws353'] - g['ws353']:+.3f}, SimLex "
                  f"{a['simlex'] - g['simlex']:+.3f}, analogy "
                  f"{(a['analogy'] - g['analogy']) * 100:+.1f} pt: {'PASS' if ok else 'FAIL'}. "
                  f"Speed: embedpipe {a['wall_s']:.0f} s vs gensim {g['wall_s']:.0f} s wall "
                  f"({g['wall_s'] / a['wall_s']:.2f}× gensim's rate), CPU "
                  f"{a['cpu_s']:.0f} s vs {g['cpu_s']:.0f} s.")  # fmt: skip
    if a and w:
        ok = a["ws353"] >= w["ws353"] - 0.01 and a["simlex"] >= w["simlex"] - 0.01
        md.append(f"* Acceptance 2 (in-vocabulary words within 0.01 of the word-only model, "
                  f"counted as not worse by more than 0.01): WS353 "
                  f"{a['ws353'] - w['ws353']:+.3f}, SimLex {a['simlex'] - w['simlex']:+.3f}: "
                  f"{'PASS' if ok else 'FAIL'}; syntactic analogies "
                  f"{_f(a['analogy_syntactic'], '.1f', 100)}% vs "
                  f"{_f(w['analogy_syntactic'], '.1f', 100)}% word-only.")  # fmt: skip
    if a and a.get("ngram_rows"):
        md.append(f"* Acceptance 3 (memory): the n-gram matrix is stated in the stage log before "
                  f"training and checked against the task memory; bound buckets × dim × 4 = "
                  f"{a['ngram_bound_bytes'] / 2**20:.0f} MiB per copy, held "
                  f"{a['ngram_bytes'] / 2**20:.0f} MiB ({a['ngram_rows']:,} buckets used by "
                  f"the vocabulary; the others are never trained). Per round: broadcast "
                  f"{a['broadcast_bytes'] / 2**20:.0f} MiB, results "
                  f"{a['result_bytes'] / 2**20:.0f} MiB.")  # fmt: skip
    md += seeds_table(runs)
    md += ["", *held_out_table(data)]
    update_section("subwords", "\n".join(md))


def seeds_table(runs: dict[str, Any]) -> list[str]:
    """Acceptance 2 over several seeds: WS353 has 353 pairs, so one seed's difference of
    ~0.01 is within the seed-to-seed spread; the mean difference over seeds is the test."""
    seeds = sorted({SETTINGS["seed"]} | {int(k.split("|seed")[1]) for k in runs if "|seed" in k})
    pairs = []
    for sd in seeds:
        suffix = "" if sd == SETTINGS["seed"] else f"|seed{sd}"
        a, w = runs.get(f"embedpipe|sub|full{suffix}"), runs.get(f"embedpipe|word|full{suffix}")
        if a and w:
            pairs.append((sd, a, w))
    if len(pairs) < 2:
        return []
    md = ["", "Acceptance 2 over seeds (`--seeds`; the same settings, only `word2vec.seed` "
          "differs; subwords − word-only):", "",
          "| seed | WS353 subwords | WS353 word-only | Δ | SimLex subwords | SimLex word-only "
          "| Δ |",
          "|---|---|---|---|---|---|---|"]  # fmt: skip
    for sd, a, w in pairs:
        md.append(f"| {sd} | {a['ws353']:.3f} | {w['ws353']:.3f} | {a['ws353'] - w['ws353']:+.3f} "
                  f"| {a['simlex']:.3f} | {w['simlex']:.3f} | "
                  f"{a['simlex'] - w['simlex']:+.3f} |")  # fmt: skip
    mean = {k: sum(a[k] - w[k] for _, a, w in pairs) / len(pairs) for k in ("ws353", "simlex")}
    spread = {
        k: max(x[k] for _, x, _ in pairs) - min(x[k] for _, x, _ in pairs)
        for k in ("ws353", "simlex")
    }
    ok = mean["ws353"] >= -0.01 and mean["simlex"] >= -0.01
    md += ["", f"Mean Δ over {len(pairs)} seeds: WS353 {mean['ws353']:+.3f}, SimLex "
           f"{mean['simlex']:+.3f} (seed-to-seed range of the subword model: WS353 "
           f"{spread['ws353']:.3f}, SimLex {spread['simlex']:.3f}): acceptance 2 on the mean: "
           f"**{'PASS' if ok else 'FAIL'}**."]  # fmt: skip
    return md


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--max-lines", type=int, default=0, help="first N lines only (a dry run)")
    ap.add_argument("--jobs", default="sub,gensim,word,heldout",
                    help="which of: sub (ours, subwords), gensim, word (ours, word-only), "
                    "heldout (both, held-out corpus)")  # fmt: skip
    ap.add_argument("--redo", action="store_true", help="re-measure stored measurements")
    ap.add_argument("--seeds", default="", help="extra seeds for acceptance 2: ours with and "
                    "without subwords on the full corpus, e.g. 2,3")  # fmt: skip
    ap.add_argument("--render", action="store_true", help="only re-render RESULTS.md")
    ap.add_argument("--gensim-worker", nargs=3, metavar=("CORPUS", "OUT", "QUERY"))
    args = ap.parse_args(argv)
    if args.gensim_worker:
        return gensim_worker(*args.gensim_worker)
    if args.render:
        render(load_results(RESULTS_JSON))
        return 0
    if not args.corpus.exists():
        print(f"{args.corpus}: not found (needs ../shared)", file=sys.stderr)
        return 2
    corpus = head_file(args.corpus, args.max_lines, WORK) if args.max_lines else args.corpus
    path = WORK / f"results-head{args.max_lines}.json" if args.max_lines else RESULTS_JSON
    tag = f"head{args.max_lines}" if args.max_lines else "full"

    import logging

    from embedpipe.config import SparkConfig
    from embedpipe.log import setup
    from embedpipe.spark import build_session

    setup()
    logging.getLogger("gensim").setLevel(logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = build_session(SparkConfig(master="local[2]", conf={
        "spark.driver.memory": "4g", "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2",
    }))  # fmt: skip
    jobs = args.jobs.split(",")
    done = load_results(path)["runs"]
    try:
        run, base, n_words, counts = prepare(spark, corpus, f"sub-{tag}")
        held = choose_held_out(counts)
        # Every word of the scored pairs (held-out words and their partners).
        scored = [p for ps in held_out_pairs(held).values() for p in ps]
        query = sorted({w for a, b, _ in scored for w in (a, b)})
        held_corpus = WORK / f"heldout-{tag}.txt"
        extra: dict[str, Any] = {"held_out": held}
        warmed = False
        plan: list[tuple[str, Any]] = []
        if "sub" in jobs:
            plan.append(("embedpipe|sub|full",
                         lambda: run_ours(spark, run, base, n_words, True, query)))  # fmt: skip
        if "gensim" in jobs:
            plan.append(("gensim|full", lambda: run_gensim(corpus, n_words, query, tag)))
        if "word" in jobs:
            plan.append(("embedpipe|word|full",
                         lambda: run_ours(spark, run, base, n_words, False, [])))  # fmt: skip
        for sd in [int(x) for x in args.seeds.split(",") if x]:
            plan.append((f"embedpipe|sub|full|seed{sd}",
                         lambda sd=sd: run_ours(spark, run, base, n_words, True, [], sd)))
            plan.append((f"embedpipe|word|full|seed{sd}",
                         lambda sd=sd: run_ours(spark, run, base, n_words, False, [], sd)))
        if "heldout" in jobs:
            if not held_corpus.exists():
                extra["held_out_tokens"] = write_held_out_corpus(corpus, set(held), held_corpus)
            else:
                extra["held_out_tokens"] = load_results(path).get("held_out_tokens", 0)
            hrun, hbase, h_words, _ = prepare(spark, held_corpus, f"sub-heldout-{tag}")
            plan.append(("embedpipe|sub|heldout",
                         lambda: run_ours(spark, hrun, hbase, h_words, True, query)))  # fmt: skip
            h_tag = tag + "-heldout"
            plan.append(("gensim|heldout",
                         lambda: run_gensim(held_corpus, h_words, query, h_tag)))  # fmt: skip
        for key, job in plan:
            if key in done and not args.redo:
                print(f"{key}: stored, skipped (--redo re-measures)")
                continue
            if key.startswith("embedpipe") and not warmed:
                warm_up(spark, corpus)
                warmed = True
            print(f"{key}: running", flush=True)
            with Usage() as usage:
                res = job()
            res["load"] = usage.load
            res["corpus"] = corpus.name
            store(path, key, res, extra)
            brief = {k: v for k, v in res.items() if k not in ("query", "losses")}
            print(f"{key}: {json.dumps(brief)}", flush=True)
    finally:
        spark.stop()
    if path != RESULTS_JSON:
        data = load_results(path)
        print("\n".join(held_out_table(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""svd stage on en-open: accuracy against scipy's svds, quality and speed against scikit-learn.

    python bench/bench_svd.py --svds-only    # compute + cache the svds reference (minutes: run
                                             # it once, in the background, before the rest)
    python bench/bench_svd.py --explore      # accuracy of (oversample, power_iters) settings
                                             # in one process (no Spark), cached in bench/out
    python bench/bench_svd.py                # the measurements; writes the svd section of
                                             # bench/RESULTS.md

Data (issue 7): PPMI of ../shared/corpora/en-open.tok.txt.gz, min_count 5, window 5
uniform, cds 0.75, k = 100. The co-occurrence matrix is built by the real pipeline
(vocab, encode, cooccur with 4 shards) into bench/out/runs/svd-en-open and reused.

* Acceptance 1 (accuracy): top-100 singular values against ``scipy.sparse.linalg.svds``
  on the same PPMI (computed once, cached in bench/out/svd-svds-k100.npz), and the largest
  principal angles between the top-10/50/100 left singular subspaces.
* Acceptance 2 (quality): ``embedpipe.scoring.evaluate_all`` (WS353, SimLex-999, Google
  analogy 3CosAdd, movie-review accuracy) of U Σ^0.5 and U, ours and scikit-learn's
  ``randomized_svd(n_iter=5)`` on the same PPMI, in the same run.
* Acceptance 3 (speed): the stage's wall time with S = 4 on local[2] (reading the cooc
  files twice, marginals, PPMI, SVD, writing the vectors) against PPMI built in one process
  + ``randomized_svd`` with the same k, oversampling and power iterations, in the same run.

U Σ^0 and U Σ^0.5 come from the same SVD: the stage is run with svd.eig = 0.5 and U is
recovered as W Σ^-0.5 (float32 rounding, far below anything the scores can see).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, SHARED, PeakRSS, command_line, machine, update_section

EN_OPEN = SHARED / "corpora" / "en-open.tok.txt.gz"
RUN = OUT / "runs" / "svd-en-open"
SVDS_CACHE = OUT / "svd-svds-k100.npz"
EXPLORE_CACHE = OUT / "svd-explore.json"
K = 100
SEED = 1
#: The issue's one-process reference (same machine kind): PPMI 1.4 s + randomized_svd 29.7 s;
#: scores of randomized_svd(n_iter=5) with U Σ^0.5 and with U.
ISSUE_PEER = {
    "U Σ^0.5": {"ws353": 0.614, "simlex999": 0.302, "google_analogy": 0.232, "movie": 0.808},
    "U": {"ws353": 0.654, "simlex999": 0.328, "google_analogy": 0.228, "movie": 0.809},
}
PIPELINE_SETTINGS = [
    f"input.path={EN_OPEN}",
    "vocab.tokenizer=whitespace",
    "vocab.min_count=5",
    "cooccur.window=5",
    "cooccur.weighting=uniform",
    "cooccur.shards=4",
]


def session():
    """local[2] with room for the cached PPMI and the V x l partial sums."""
    from embedpipe.config import SparkConfig
    from embedpipe.spark import build_session

    return build_session(
        SparkConfig(
            master="local[2]",
            conf={
                "spark.driver.memory": "4g",
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": "4",
                "spark.default.parallelism": "2",
            },
        )
    )


def prepare(spark) -> None:
    """vocab, encode and cooccur of en-open into RUN (skipped when already current)."""
    from embedpipe.cli import run_stages
    from embedpipe.config import load_config
    from embedpipe.runs import RunDir

    run_stages(
        ["vocab", "encode", "cooccur"],
        load_config(None, PIPELINE_SETTINGS),
        RunDir(str(RUN)),
        spark=spark,
    )


def one_process_ppmi(cds: float = 0.75):
    """(tokens, cooc fingerprint, PPMI as float32 CSR, seconds to build it from the CSR of x).

    The same kernels as the stage on the whole matrix in one process: what a single-machine
    user of scikit-learn would run. Reading the cooc files is not timed.
    """
    from embedpipe import cooccur as layout
    from embedpipe.kernels import ppmi
    from embedpipe.runs import RunDir
    from embedpipe.stages.vocab import read_vocab

    run = RunDir(str(RUN))
    x = layout.read_matrix(run)
    tokens = read_vocab(run).column("token").to_pylist()
    t0 = time.perf_counter()
    rows = np.arange(x.shape[0])
    row_sums, col_sums = ppmi.marginals_partial(rows, x, x.shape[0])
    p = ppmi.context_distribution(col_sums, cds)
    a = ppmi.ppmi_shard(rows, x, row_sums, p)
    seconds = time.perf_counter() - t0
    return tokens, run.record("cooccur")["fingerprint"], a, seconds


def svds_reference(a, fp: str, compute: bool = False):
    """(s descending, U) of ``scipy.sparse.linalg.svds(a, k=K)``, cached in SVDS_CACHE."""
    import scipy.sparse.linalg as spla

    if SVDS_CACHE.exists():
        with np.load(SVDS_CACHE, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fp:
                return z["s"], z["u"], float(z["seconds"])
    if not compute:
        raise SystemExit(
            f"{SVDS_CACHE} missing or stale: run `python bench/bench_svd.py "
            "--svds-only` first (it takes minutes)"
        )
    t0 = time.perf_counter()
    u, s, _ = spla.svds(a.astype(np.float64), k=K, random_state=0)
    seconds = time.perf_counter() - t0
    order = np.argsort(s)[::-1]
    s, u = s[order], u[:, order]
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = SVDS_CACHE.with_suffix(".tmp.npz")
    np.savez(tmp, s=s, u=u, fingerprint=np.array(fp), seconds=np.array(seconds))
    tmp.rename(SVDS_CACHE)
    return s, u, seconds


def accuracy(s, u, s_ref, u_ref) -> dict:
    """Relative singular-value errors and largest principal angles (degrees) against svds."""
    from embedpipe.kernels.rsvd import largest_principal_angle

    rel = np.abs(s[:K] - s_ref[:K]) / s_ref[:K]
    out = {
        "max_rel_err": float(rel.max()),
        "rel_err_sigma_k": float(rel[K - 1]),
        "top10_rel_err": float(rel[:10].max()),
    }
    for top in (10, 50, 100):
        out[f"angle_top{top}"] = float(
            np.degrees(largest_principal_angle(u[:, :top], u_ref[:, :top]))
        )
    return out


def explore(a, s_ref, u_ref, settings) -> list[dict]:
    """Accuracy of the sharded kernel (S = 4, LocalRunner, one process) for each (os, q)."""
    from embedpipe.kernels import rsvd
    from embedpipe.stages.svd import ShardMatrix

    shards = [(rows, ShardMatrix(m)) for rows, m in rsvd.shard_rows(a, 4)]
    rows = []
    for oversample, q in settings:
        t0 = time.perf_counter()
        u, s, _ = rsvd.randomized_svd_sharded(shards, a.shape[1], K, oversample, q, SEED)
        row = {
            "oversample": oversample,
            "power_iters": q,
            "seconds_one_process": round(time.perf_counter() - t0, 1),
            **accuracy(s, u, s_ref, u_ref),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def scores(tokens, w) -> dict:
    """The four headline scores of ``w`` (evaluate_all on the bundled sets, 3CosAdd)."""
    from embedpipe.scoring import evaluate_all
    from embedpipe.vectors import Vectors

    r = evaluate_all(Vectors(tokens, w), methods=("3cosadd",))
    return {
        "ws353": r["similarity"]["ws353"]["spearman"],
        "simlex999": r["similarity"]["simlex999"]["spearman"],
        "google_analogy": r["analogy"]["google_analogy"]["3cosadd"]["accuracy"],
        "movie": r["classification"]["movie_reviews"]["accuracy"],
    }


def run_ours(spark, oversample: int, q: int) -> dict:
    """The svd stage (forced) with eig 0.5; returns timings, model.json, s and U."""
    from embedpipe.config import load_config
    from embedpipe.runs import RunDir
    from embedpipe.stages import svd
    from embedpipe.vectors import Vectors

    cfg = load_config(
        None,
        [
            *PIPELINE_SETTINGS,
            f"svd.dim={K}",
            f"svd.oversample={oversample}",
            f"svd.power_iters={q}",
            f"svd.seed={SEED}",
            "svd.eig=0.5",
        ],
    )
    run = RunDir(str(RUN))
    res = svd.run(spark, cfg, run, force=True)
    vec = Vectors.load_model_dir(run.path("svd"))
    model = vec.meta
    s = np.array(model["singular_values"])
    w = vec.vectors.astype(np.float64)
    return {"seconds": res.seconds, "model": model, "s": s, "u": w / np.sqrt(s), "w": w}


def run_sklearn(a_x, oversample: int, q: int, cds: float = 0.75) -> dict:
    """PPMI in one process + sklearn's randomized_svd with the same k, oversampling, iterations."""
    from sklearn.utils.extmath import randomized_svd

    from embedpipe.kernels import ppmi

    x = a_x
    t0 = time.perf_counter()
    rows = np.arange(x.shape[0])
    row_sums, col_sums = ppmi.marginals_partial(rows, x, x.shape[0])
    a = ppmi.ppmi_shard(rows, x, row_sums, ppmi.context_distribution(col_sums, cds))
    t1 = time.perf_counter()
    u, s, _ = randomized_svd(a, K, n_oversamples=oversample, n_iter=q, random_state=SEED)
    t2 = time.perf_counter()
    return {
        "ppmi_seconds": t1 - t0,
        "svd_seconds": t2 - t1,
        "seconds": t2 - t0,
        "s": s.astype(np.float64),
        "u": u.astype(np.float64),
    }


def fmt_scores(sc: dict) -> str:
    return (
        f"{sc['ws353']:.3f} | {sc['simlex999']:.3f} | {100 * sc['google_analogy']:.1f}% | "
        f"{sc['movie']:.3f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--svds-only", action="store_true", help="compute and cache svds, then stop")
    ap.add_argument("--explore", action="store_true", help="accuracy of several settings")
    ap.add_argument(
        "--grid",
        nargs="*",
        default=["10,3", "10,16", "40,6", "90,4"],
        help="--explore settings as oversample,power_iters",
    )
    ap.add_argument("--accurate-oversample", type=int, default=40)
    ap.add_argument("--accurate-power-iters", type=int, default=8)
    args = ap.parse_args()
    if not EN_OPEN.exists():
        print(f"{EN_OPEN} not found: this benchmark needs ../shared", file=sys.stderr)
        return 1
    from embedpipe.log import setup

    setup()
    load = os.getloadavg()[0]
    if not (RUN / "cooc").exists():
        spark = session()
        try:
            prepare(spark)
        finally:
            spark.stop()
    tokens, fp, a, ppmi_seconds = one_process_ppmi()
    print(f"PPMI {a.shape[0]:,}^2, {a.nnz:,} non-zeros, built in {ppmi_seconds:.1f}s", flush=True)
    s_ref, u_ref, svds_seconds = svds_reference(a, fp, compute=args.svds_only)
    if args.svds_only:
        print(f"svds k={K}: {svds_seconds:.0f}s, cached in {SVDS_CACHE}")
        return 0
    if args.explore:
        grid = [(int(o), int(q)) for o, q in (g.split(",") for g in args.grid)]
        rows = explore(a, s_ref, u_ref, grid)
        EXPLORE_CACHE.write_text(json.dumps(rows, indent=1))
        return 0
    from embedpipe import cooccur as layout
    from embedpipe.runs import RunDir

    x = layout.read_matrix(RunDir(str(RUN)))
    settings = {
        "default": (10, 3),
        "accurate": (args.accurate_oversample, args.accurate_power_iters),
    }
    ours, peers = {}, {}
    with PeakRSS() as peak:
        spark = session()
        try:
            prepare(spark)
            # Peer and ours alternate, so that a change of the machine's load hits both.
            for name, (os_, q) in settings.items():
                peers[name] = run_sklearn(x, os_, q)
                print(name, "sklearn", round(peers[name]["seconds"], 1), flush=True)
                ours[name] = run_ours(spark, os_, q)
                print(name, "ours", round(ours[name]["seconds"], 1), flush=True)
        finally:
            spark.stop()
    peers["n_iter=5"] = run_sklearn(x, 10, 5)
    quality = {}
    for label, r in [
        ("ours, default", ours["default"]),
        ("ours, accurate", ours["accurate"]),
        ("sklearn n_iter=5", peers["n_iter=5"]),
    ]:
        for eig in (0.5, 0.0):
            quality[(label, eig)] = scores(tokens, r["u"] * r["s"] ** eig)
            print(label, eig, quality[(label, eig)], flush=True)
    write_results(
        settings, ours, peers, quality, s_ref, u_ref, svds_seconds, ppmi_seconds, a, peak.gib, load
    )
    return 0


def write_results(
    settings, ours, peers, quality, s_ref, u_ref, svds_seconds, ppmi_seconds, a, peak_gib, load
) -> None:
    """The svd section of RESULTS.md, every figure from this run (svds from its cache)."""
    lines = [
        "## svd: PPMI + randomized truncated SVD (issue 7)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}; load average {load:.1f} at the start (shared machine).  ",
        f"Matrix: PPMI of en-open.tok (min_count 5, window 5 uniform, cds 0.75): "
        f"{a.shape[0]:,}² with {a.nnz:,} non-zeros (built by vocab, encode, cooccur with S = 4). "
        f"k = {K}, seed {SEED}. Ours: the `svd` stage, local[2], S = 4, CholeskyQR2 with "
        f"dynamic shift. Peer: scikit-learn {__import__('sklearn').__version__} "
        "`randomized_svd` on the same CSR in one process (float32, LU normaliser), PPMI built "
        "in the same process.",
        "",
        "### 1. Accuracy against scipy.sparse.linalg.svds",
        "",
        f"Reference: `svds(k={K})` (ARPACK, float64) took {svds_seconds:.0f} s (cached). "
        "Largest principal angle between the top-n left singular subspaces, in degrees "
        "(σ₁₀₀ ≈ σ₁₀₁ makes the top-100 angle ill-defined; top-10/50 are meaningful).",
        "",
        "| run | oversample | power iters | max rel. error σ₁..σ₁₀₀ | σ₁₀₀ error | "
        "angle top-10 | top-50 | top-100 | within 0.5%? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (os_, q) in settings.items():
        for who, r in (("ours", ours[name]), ("sklearn", peers[name])):
            acc = accuracy(r["s"], r["u"], s_ref, u_ref)
            r["accuracy"] = acc
            lines.append(
                f"| {who}, {name} | {os_} | {q} | {100 * acc['max_rel_err']:.2f}% | "
                f"{100 * acc['rel_err_sigma_k']:.2f}% | {acc['angle_top10']:.3f} | "
                f"{acc['angle_top50']:.2f} | {acc['angle_top100']:.1f} | "
                f"{'yes' if acc['max_rel_err'] <= 0.005 else 'no'} |"
            )
    if EXPLORE_CACHE.exists():
        rows = json.loads(EXPLORE_CACHE.read_text())
        lines += [
            "",
            "Settings explored with `--explore` (same kernel, S = 4 in one process, "
            "LocalRunner; seconds single-threaded on the loaded machine):",
            "",
            "| oversample | power iters | max rel. error | σ₁₀₀ error | angle top-10 | "
            "top-50 | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['oversample']} | {r['power_iters']} | {100 * r['max_rel_err']:.2f}% | "
                f"{100 * r['rel_err_sigma_k']:.2f}% | {r['angle_top10']:.3f} | "
                f"{r['angle_top50']:.2f} | {r['seconds_one_process']:.0f} |"
            )
    lines += [
        "",
        "### 2. Quality (same PPMI, same scorer)",
        "",
        "| vectors | output | WS353 ρ | SimLex-999 ρ | Google 3CosAdd | movie-review acc. |",
        "|---|---|---|---|---|---|",
    ]
    for (label, eig), sc in quality.items():
        lines.append(f"| {label} | {'U Σ^0.5' if eig else 'U'} | {fmt_scores(sc)} |")
    for out, sc in ISSUE_PEER.items():
        lines.append(f"| issue 7's reference (sklearn n_iter=5) | {out} | {fmt_scores(sc)} |")
    lines += [
        "",
        "### 3. Speed (same k, oversampling and power iterations; PPMI build included)",
        "",
        "| setting | ours: stage wall time | reads + marginals | PPMI | SVD | write | "
        "sklearn: PPMI + randomized_svd | ratio (≤ 1.5?) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (os_, q) in settings.items():
        o, p = ours[name], peers[name]
        t = o["model"]["timings"]
        ratio = o["seconds"] / p["seconds"]
        lines.append(
            f"| {name} (oversample {os_}, {q} iters) | {o['seconds']:.1f} s | "
            f"{t['marginals_seconds']:.1f} s | {t['ppmi_seconds']:.1f} s | "
            f"{t['svd_seconds']:.1f} s | {t['write_seconds']:.1f} s | "
            f"{p['seconds']:.1f} s ({p['ppmi_seconds']:.1f} + {p['svd_seconds']:.1f}) | "
            f"{ratio:.2f} ({'yes' if ratio <= 1.5 else 'no'}) |"
        )
    m = ours["default"]["model"]
    mem, tr = m["memory"], m["traffic"]
    lines += [
        "",
        "### Memory and traffic (default setting, from model.json)",
        "",
        f"Task: estimate {mem['task_bytes_estimate'] / 2**20:.0f} MiB (shard + "
        f"{m['sketch_width']}-column V × l matrices), measured peak Python-worker RSS "
        f"{mem['peak_task_rss'] / 2**20:.0f} MiB. Driver: estimate "
        f"{mem['driver_bytes_estimate'] / 2**20:.0f} MiB for the SVD, measured peak driver "
        f"RSS {mem['driver_peak_rss'] / 2**20:.0f} MiB (includes the bench's own one-process "
        f"PPMI). Whole process tree (driver, JVM, workers) peak {peak_gib:.1f} GiB. "
        f"Cached PPMI {mem['ppmi_bytes'] / 2**20:.0f} MiB. Traffic: {tr['product_passes']} "
        f"sparse products + 2 file reads; {tr['broadcasts']} broadcasts, "
        f"{tr['broadcast_bytes'] / 2**20:.0f} MiB in all; {tr['sums']} reductions, "
        f"{tr['partial_sum_bytes_to_driver'] / 2**20:.0f} MiB of partial sums to the driver.",
    ]
    update_section("svd", "\n".join(lines))
    summary = {
        "settings": settings,
        "ours": {
            n: {
                "seconds": r["seconds"],
                "timings": r["model"]["timings"],
                "accuracy": r.get("accuracy"),
            }
            for n, r in ours.items()
        },
        "sklearn": {
            n: {k: r[k] for k in ("seconds", "ppmi_seconds", "svd_seconds")}
            | {"accuracy": r.get("accuracy")}
            for n, r in peers.items()
        },
        "quality": {f"{lab} eig={eig}": sc for (lab, eig), sc in quality.items()},
    }
    (OUT / "svd-bench.json").write_text(json.dumps(summary, indent=1, default=str))
    shutil.copy(RUN / "svd" / "model.json", OUT / "svd-model-accurate.json")


if __name__ == "__main__":
    sys.exit(main())

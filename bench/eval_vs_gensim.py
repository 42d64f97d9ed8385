"""Our evaluation scores equal gensim's on vectors gensim trains on en-open.

    .venv/bin/python bench/eval_vs_gensim.py [--max-lines N] [--corpus PATH] [--work DIR]

Trains gensim Word2Vec (skip-gram, dim 100, window 5, min_count 5, 5 epochs,
2 workers, seed 1) on ``../shared/corpora/en-open.tok.txt.gz`` (the first
``--max-lines`` lines; default the whole file), saves it in the word2vec binary
format, then scores the same file with gensim (``evaluate_word_pairs`` with its
defaults, ``evaluate_word_analogies`` with ``restrict_vocab=30000``) and with
embedpipe. Prints both and the absolute differences; exits 1 if any exceeds 1e-6.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command_line, machine, update_section
from embedpipe import scoring
from embedpipe.vectors import Vectors

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpora" / "en-open.tok.txt.gz"
TOLERANCE = 1e-6


def main(argv: list[str] | None = None) -> int:
    """Train, score with both libraries, compare; 0 when every difference is <= 1e-6."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--max-lines", type=int, default=None, help="default: the whole file")
    ap.add_argument("--work", default=None, help="directory for the vectors file (default: temp)")
    ap.add_argument("--restrict-vocab", type=int, default=30000)
    args = ap.parse_args(argv)

    from gensim.models import KeyedVectors, Word2Vec
    from gensim.models.word2vec import LineSentence

    logging.basicConfig(level=logging.WARNING)
    if not Path(args.corpus).exists():
        print(f"{args.corpus}: not found (needs ../shared)", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="eval_vs_gensim-"))
    work.mkdir(parents=True, exist_ok=True)
    path = str(work / "w2v.bin")

    t = time.perf_counter()
    model = Word2Vec(
        LineSentence(args.corpus, limit=args.max_lines),
        vector_size=100,
        window=5,
        min_count=5,
        sg=1,
        epochs=5,
        workers=2,
        seed=1,
    )
    model.wv.save_word2vec_format(path, binary=True)
    print(f"trained {len(model.wv)} x 100 in {time.perf_counter() - t:.1f}s -> {path}")

    data = {d.name: d.path for d in scoring.default_datasets()}
    kv = KeyedVectors.load_word2vec_format(path, binary=True)
    ours = Vectors.load(path)

    rows = []
    t = time.perf_counter()
    g_ws = kv.evaluate_word_pairs(data["ws353"])[1].statistic
    g_sl = kv.evaluate_word_pairs(data["simlex999"])[1].statistic
    g_an = kv.evaluate_word_analogies(data["google_analogy"], restrict_vocab=args.restrict_vocab)[0]
    t_gensim = time.perf_counter() - t
    t = time.perf_counter()
    o_ws = scoring.evaluate_similarity(ours, data["ws353"])
    o_sl = scoring.evaluate_similarity(ours, data["simlex999"])
    o_an = scoring.evaluate_analogy(ours, data["google_analogy"], args.restrict_vocab)
    t_ours = time.perf_counter() - t
    rows.append(("WS353 Spearman rho", g_ws, o_ws["spearman"], f"{o_ws['used']}/{o_ws['pairs']}"))
    rows.append(("SimLex Spearman rho", g_sl, o_sl["spearman"], f"{o_sl['used']}/{o_sl['pairs']}"))
    rows.append(
        (
            f"analogy 3CosAdd acc (restrict {args.restrict_vocab})",
            g_an,
            o_an["accuracy"],
            f"{o_an['covered']}/{o_an['questions']}",
        )
    )
    print(f"\n{'score':<38} {'gensim':>10} {'embedpipe':>10} {'|diff|':>9}  used")
    worst = 0.0
    for label, g, o, used in rows:
        diff = abs(g - o)
        worst = max(worst, diff)
        print(f"{label:<38} {g:>10.6f} {o:>10.6f} {diff:>9.1e}  {used}")
    print(f"\nscoring time: gensim {t_gensim:.1f}s, embedpipe {t_ours:.1f}s")
    md = [
        "## Scores equal gensim's on the same vectors (issue 4)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}  ",
        f"Vectors: gensim Word2Vec skip-gram, dim 100, window 5, min_count 5, 5 epochs, "
        f"trained on {Path(args.corpus).name}"
        + (f" (first {args.max_lines:,} lines)" if args.max_lines else " (whole file)")
        + f": {len(kv):,} words. Both scorers read the same word2vec binary file.",
        "",
        "| score | gensim | embedpipe | abs diff | used |",
        "|---|---|---|---|---|",
        *[f"| {label} | {g:.6f} | {o:.6f} | {abs(g - o):.1e} | {used} |"
          for label, g, o, used in rows],
        "",
        f"Scoring time for these three: gensim {t_gensim:.1f} s, embedpipe {t_ours:.1f} s. "
        f"Verdict: {'PASS' if worst <= TOLERANCE else 'FAIL'} (tolerance {TOLERANCE}).",
    ]
    update_section("eval-vs-gensim", "\n".join(md))
    if worst > TOLERANCE:
        print(f"FAIL: a difference exceeds {TOLERANCE}", file=sys.stderr)
        return 1
    print(f"OK: all differences <= {TOLERANCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

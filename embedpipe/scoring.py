"""Score word vectors: word similarity, analogies and text classification (no Spark).

Similarity and analogy scores follow gensim's ``KeyedVectors.evaluate_word_pairs``
and ``evaluate_word_analogies`` exactly, so numbers can be compared with published
gensim results:

* words are compared case-insensitively by upper-casing both the test words and
  the vocabulary; when a vocabulary holds several case variants the most frequent
  (first) one is used;
* ``restrict_vocab=N`` keeps only the first (most frequent) N words: a pair or
  question with any other word is out of vocabulary and skipped (and reported);
* similarity is the cosine computed as gensim computes it (float64 BLAS norm,
  float32 dot), Spearman's rho by ``scipy.stats.spearmanr``;
* an analogy ``a b c d`` is correct when the best word for ``b - a + c`` among the
  N most frequent, excluding a, b and c, is d (3CosAdd). Candidates are ranked for
  all questions at once with matrix products; a question whose decision is closer
  than float32 rounding could change is re-ranked exactly as gensim does (one
  matrix-vector product), so the accuracy is gensim's to the question.

3CosMul (Levy & Goldberg 2014) uses gensim's ``most_similar_cosmul`` objective, but
over the same ``restrict_vocab`` words (gensim's cosmul ignores the restriction).

Classification: each document is the mean of the L2-normalised vectors of its
in-vocabulary tokens; features are standardised on the training fold; an
L2-regularised logistic regression (binary, or multinomial for more classes;
the objective of scikit-learn's ``LogisticRegression(C=1)``) is fitted with
L-BFGS; stratified k-fold with a fixed seed; accuracy mean and (population) std.
"""

from __future__ import annotations

import importlib.resources
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special
import scipy.stats

from embedpipe import fsutil
from embedpipe.errors import ConfigError, InputError
from embedpipe.vectors import Vectors, _topk, cosmul_scores, gensim_unitvec

logger = logging.getLogger(__name__)

KINDS = ("similarity", "analogy", "classification")
METHODS = ("3cosadd", "3cosmul")

# Floats per score block in batched analogy ranking (2**24 floats = 64 MB).
_SCORE_BUDGET = 1 << 24
# Added to the float32 rounding bound when deciding whether a question is a near tie.
_TIE_SLACK = 1e-5
# gensim asks most_similar for the top 5 (plus the 3 query words) per question.
_GENSIM_TOPN = 5


@dataclass(frozen=True)
class EvalDataset:
    """One evaluation file: ``kind`` is similarity, analogy or classification."""

    name: str
    kind: str
    path: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"dataset {self.name!r}: kind {self.kind!r}, use one of {KINDS}")


@dataclass(frozen=True)
class AnalogySection:
    """A ``: section`` of an analogy file and its questions ``(a, b, c, d)``."""

    name: str
    questions: list[tuple[str, str, str, str]]

    @property
    def semantic(self) -> bool:
        """Google convention: syntactic sections are named ``gram*``."""
        return not self.name.startswith("gram")


def _bundled(name: str) -> str:
    return str(importlib.resources.files("embedpipe") / "data" / "eval" / name)


def default_datasets() -> list[EvalDataset]:
    """The evaluation sets shipped inside the package (see ``embedpipe/data/eval/README.md``)."""
    return [
        EvalDataset("ws353", "similarity", _bundled("ws353.txt")),
        EvalDataset("simlex999", "similarity", _bundled("simlex999.txt")),
        EvalDataset("google_analogy", "analogy", _bundled("questions-words.txt")),
        EvalDataset("movie_reviews", "classification", _bundled("movie_reviews.tsv.gz")),
    ]


def _stem(path: str) -> str:
    base = posixpath.basename(path.rstrip("/"))
    for suffix in (".gz", ".bz2", ".txt", ".tsv", ".csv"):
        base = base.removesuffix(suffix)
    return base or path


def datasets_from_files(
    similarity: Sequence[str] = (), analogy: str = "", classification: str = ""
) -> list[EvalDataset]:
    """Datasets for the ``[evaluate]`` settings; a kind left empty uses the bundled sets."""
    bundled = default_datasets()
    out: list[EvalDataset] = []
    given = {"similarity": list(similarity), "analogy": [analogy] if analogy else []}
    given["classification"] = [classification] if classification else []
    for kind in KINDS:
        if given[kind]:
            out += [EvalDataset(_stem(p), kind, p) for p in given[kind]]
        else:
            out += [d for d in bundled if d.kind == kind]
    return out


# --------------------------------------------------------------------------- readers


def _read_lines(path: str) -> list[str]:
    """Lines of a small UTF-8 text file read through fsutil.

    ``fsutil.read_bytes`` opens files with Arrow's compression detection, so
    ``.gz`` / ``.bz2`` files arrive decompressed.
    """
    try:
        data = _bundled_bytes(path)
        if data is None:
            data = fsutil.read_bytes(path)
        return data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read as UTF-8 text ({e})") from e


def _bundled_bytes(path: str) -> bytes | None:
    """Bytes of a bundled file through importlib.resources, or None if not bundled.

    When the package is shipped as a zip (``spark-submit --py-files embedpipe.zip``)
    its data files have no path on disk; resources still read them.
    """
    import gzip

    root = str(importlib.resources.files("embedpipe")).rstrip("/")
    if not path.startswith(root + "/") or posixpath.exists(path):
        return None
    node = importlib.resources.files("embedpipe")
    for part in path[len(root) + 1 :].split("/"):
        node = node / part
    data = node.read_bytes()
    return gzip.decompress(data) if path.endswith(".gz") else data


def read_similarity(path: str) -> list[tuple[str, str, float]]:
    """Read ``word1<TAB>word2<TAB>score`` lines (whitespace-separated when a line has no tab).

    Blank lines and ``#`` comments are skipped; anything else malformed is an error.
    """
    pairs: list[tuple[str, str, float]] = []
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise InputError(
                f"{path}:{no}: expected 'word1<TAB>word2<TAB>score', found {len(fields)} fields"
            )
        try:
            score = float(fields[2])
        except ValueError:
            raise InputError(f"{path}:{no}: score {fields[2]!r} is not a number") from None
        pairs.append((fields[0], fields[1], score))
    if not pairs:
        raise InputError(f"{path}: no word pairs found; expected 'word1<TAB>word2<TAB>score'")
    return pairs


def read_analogy(path: str) -> list[AnalogySection]:
    """Read the Google analogy format: ``: section`` lines, then ``a b c d`` questions."""
    sections: list[AnalogySection] = []
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        if line.startswith(":"):
            name = line.lstrip(": ").strip()  # gensim's rule
            if not name:
                raise InputError(f"{path}:{no}: empty section name; write ': name'")
            sections.append(AnalogySection(name, []))
            continue
        words = line.split()
        if len(words) != 4:
            raise InputError(f"{path}:{no}: expected 4 words 'a b c d', found {len(words)}")
        if not sections:
            raise InputError(f"{path}:{no}: question before the first ': section' line")
        sections[-1].questions.append((words[0], words[1], words[2], words[3]))
    if not any(s.questions for s in sections):
        raise InputError(f"{path}: no analogy questions found; expected ': section' then 'a b c d'")
    return sections


def read_classification(path: str) -> tuple[list[list[str]], list[str]]:
    """Read ``label<TAB>text`` lines into (token lists, labels); text is split on whitespace."""
    docs: list[list[str]] = []
    labels: list[str] = []
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip():
            raise InputError(f"{path}:{no}: expected 'label<TAB>text'")
        labels.append(label.strip())
        docs.append(text.split())
    if not docs:
        raise InputError(f"{path}: no documents found; expected 'label<TAB>text' lines")
    return docs, labels


# --------------------------------------------------------------------------- helpers


def _ok_vocab(vectors: Vectors, restrict_vocab: int | None, case_insensitive: bool) -> dict:
    """gensim's ``ok_vocab``: key -> row over the first ``restrict_vocab`` words.

    Upper-cased keys when ``case_insensitive``; the first (most frequent) case
    variant wins. ``restrict_vocab`` None or 0 means all words.
    """
    keys = vectors.index_to_key[: restrict_vocab or None]
    if not case_insensitive:
        return {k: i for i, k in enumerate(keys)}
    ok: dict[str, int] = {}
    for i, k in enumerate(keys):
        ok.setdefault(k.upper(), i)
    return ok


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# --------------------------------------------------------------------------- similarity


def evaluate_similarity(
    vectors: Vectors,
    pairs: str | Sequence[tuple[str, str, float]],
    restrict_vocab: int | None = 300000,
    case_insensitive: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """Spearman's rho between gold scores and cosines, as ``evaluate_word_pairs`` computes it.

    ``pairs`` is a file path or a list of ``(word1, word2, score)``. Defaults are
    gensim's (``restrict_vocab=300000``, ``case_insensitive=True``). Pairs with a
    word outside the vocabulary are skipped and listed in ``oov_pairs``.
    """
    path = pairs if isinstance(pairs, str) else None
    items = read_similarity(pairs) if isinstance(pairs, str) else list(pairs)
    ok = _ok_vocab(vectors, restrict_vocab, case_insensitive)
    mat = vectors.vectors
    gold: list[float] = []
    model: list[Any] = []
    scored: list[list[Any]] = []
    oov: list[list[str]] = []
    for w1, w2, score in items:
        a, b = (w1.upper(), w2.upper()) if case_insensitive else (w1, w2)
        if a not in ok or b not in ok:
            oov.append([w1, w2])
            continue
        # The same float32 value gensim's similarity() returns, so ranks (and ties) agree.
        sim = np.dot(gensim_unitvec(mat[ok[a]]), gensim_unitvec(mat[ok[b]]))
        gold.append(score)
        model.append(sim)
        scored.append([w1, w2, float(score), float(sim)])
    rho = pearson = None
    if len(gold) >= 2:
        rho = _finite_or_none(scipy.stats.spearmanr(gold, model).statistic)
        if np.ptp(np.asarray(model, dtype=np.float64)) > 0 and np.ptp(gold) > 0:
            pearson = _finite_or_none(scipy.stats.pearsonr(gold, model).statistic)
    total = len(items)
    return {
        "kind": "similarity",
        "dataset": name or (_stem(path) if path else "pairs"),
        "path": path,
        "metric": "spearman",
        "spearman": rho,
        "pearson": pearson,
        "pairs": total,
        "used": len(gold),
        "coverage": _ratio(len(gold), total),
        "restrict_vocab": restrict_vocab,
        "case_insensitive": case_insensitive,
        "oov_pairs": oov,
        "scored": scored,
    }


# --------------------------------------------------------------------------- analogy


def _gensim_ranking(
    vectors: np.ndarray, norms: np.ndarray, ia: int, ib: int, ic: int, limit: int
) -> list[int]:
    """gensim's ``most_similar(positive=[b, c], negative=[a], topn=5, restrict_vocab=limit)``.

    The same NumPy and BLAS operations in the same order and dtypes, so the
    ranking is gensim's bit for bit (used only for near-tied questions).
    """
    weight = np.concatenate((np.ones(2), -1.0 * np.ones(1)))
    mean = np.zeros(vectors.shape[1], vectors.dtype)
    total_weight = 0
    for w, idx in zip(weight, (ib, ic, ia), strict=True):
        mean += w * (vectors[idx] / norms[idx])
        total_weight += abs(w)
    mean = mean / total_weight
    mean = gensim_unitvec(mean).astype(np.float32)
    dists = np.dot(vectors[:limit], mean) / norms[:limit]
    topn = _GENSIM_TOPN + 3
    x = -dists
    if topn >= x.size:
        best = np.argsort(x)[:topn]
    else:
        part = np.argpartition(x, topn)[:topn]
        best = part.take(np.argsort(x.take(part)))
    keys = (ib, ic, ia)
    return [int(i) for i in best if i not in keys][:_GENSIM_TOPN]


def _pick(
    candidates: Sequence[int], keys: Sequence[str], ignore: set[str]
) -> tuple[int, str | None]:
    """gensim's choice among its top 5: the first not in ``ignore`` (else the last one).

    Returns (position of the decisive candidate or -1, predicted key).
    """
    predicted = None
    for pos, i in enumerate(candidates):
        predicted = keys[i]
        if predicted not in ignore:
            return pos, predicted
    return -1, predicted


def evaluate_analogy(
    vectors: Vectors,
    path: str | Sequence[AnalogySection],
    restrict_vocab: int | None = 30000,
    method: str = "3cosadd",
    case_insensitive: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """Analogy accuracy overall, semantic / syntactic and per section, with coverage.

    Mirrors ``KeyedVectors.evaluate_word_analogies(path, restrict_vocab,
    case_insensitive)`` for 3CosAdd: a question counts when its four words are among
    the ``restrict_vocab`` most frequent words (None or 0 = all).
    """
    method = method.lower()
    if method not in METHODS:
        raise ConfigError(f"unknown analogy method {method!r}; use one of {', '.join(METHODS)}")
    src = path if isinstance(path, str) else None
    sections = read_analogy(path) if isinstance(path, str) else list(path)
    ok = _ok_vocab(vectors, restrict_vocab, case_insensitive)
    limit = min(len(vectors), restrict_vocab or len(vectors))

    def norm(w: str) -> str:
        return w.upper() if case_insensitive else w

    # Collect the covered questions in file order.
    qa, qb, qc, expected, ignores, sec_of = [], [], [], [], [], []
    per_section = []
    for s, sec in enumerate(sections):
        covered = 0
        for q in sec.questions:
            a, b, c, d = (norm(w) for w in q)
            if a in ok and b in ok and c in ok and d in ok:
                qa.append(ok[a])
                qb.append(ok[b])
                qc.append(ok[c])
                expected.append(d)
                ignores.append({a, b, c})
                sec_of.append(s)
                covered += 1
        per_section.append([sec, covered, 0])
    keys = [norm(k) for k in vectors.index_to_key[:limit]]
    n = len(qa)
    predicted = _analogy_predictions(
        vectors, np.array(qa), np.array(qb), np.array(qc), ignores, keys, limit, method
    )
    for i in range(n):
        if predicted[i] == expected[i]:
            per_section[sec_of[i]][2] += 1

    def block(rows: list) -> dict[str, Any]:
        questions = sum(len(r[0].questions) for r in rows)
        covered = sum(r[1] for r in rows)
        correct = sum(r[2] for r in rows)
        return {
            "questions": questions,
            "covered": covered,
            "correct": correct,
            "accuracy": _ratio(correct, covered),
            "coverage": _ratio(covered, questions),
        }

    total = block(per_section)
    return {
        "kind": "analogy",
        "dataset": name or (_stem(src) if src else "analogies"),
        "path": src,
        "method": method,
        "metric": "accuracy",
        **total,
        "semantic": block([r for r in per_section if r[0].semantic]),
        "syntactic": block([r for r in per_section if not r[0].semantic]),
        "sections": [{"section": r[0].name, **block([r])} for r in per_section],
        "restrict_vocab": restrict_vocab,
        "case_insensitive": case_insensitive,
    }


def _analogy_predictions(
    vectors: Vectors,
    qa: np.ndarray,
    qb: np.ndarray,
    qc: np.ndarray,
    ignores: list[set[str]],
    keys: list[str],
    limit: int,
    method: str,
) -> list[str | None]:
    """Predicted (normalised) answer per question; batched, exact fallback for near ties."""
    n = len(qa)
    out: list[str | None] = [None] * n
    if n == 0:
        return out
    unit = vectors.unit
    target = unit[:limit]
    dim = vectors.dim
    # Largest possible difference between our float32 score and gensim's for one
    # candidate is ~dim * 2**-24 per computation (dot-product rounding); a decision
    # whose gaps all exceed twice that (plus slack) cannot differ from gensim's.
    tol = _TIE_SLACK + 2 * dim * float(np.finfo(np.float32).eps)
    norms = None
    width = 3 if method == "3cosmul" else 1
    step = max(1, _SCORE_BUDGET // (limit * (width + 1)))
    k = _GENSIM_TOPN + 3
    exact_calls = 0
    for s in range(0, n, step):
        e = min(n, s + step)
        ia, ib, ic = qa[s:e], qb[s:e], qc[s:e]
        if method == "3cosadd":
            m = unit[ib] + unit[ic] - unit[ia]
            m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)
            scores = m @ target.T
        else:
            scores = cosmul_scores(unit[ia] @ target.T, unit[ib] @ target.T, unit[ic] @ target.T)
        rows = np.arange(e - s)
        for col in (ia, ib, ic):
            scores[rows, col] = -np.inf
        idx, vals = _topk(scores, k)
        for r in range(e - s):
            finite = vals[r] > -np.inf
            cand = idx[r][finite][:_GENSIM_TOPN].tolist()
            score = vals[r][finite].tolist()
            pos, pred = _pick(cand, keys, ignores[s + r])
            if method == "3cosadd":
                # Scores are descending: the decision stands if every gap down to the
                # first candidate after the chosen one exceeds tol.
                steps = -np.diff(score[: pos + 2]) if pos >= 0 else None
                if steps is None or (steps.size and steps.min() <= tol):
                    if norms is None:
                        norms = np.linalg.norm(vectors.vectors[:limit], axis=1)
                    cand = _gensim_ranking(
                        vectors.vectors, norms, int(ia[r]), int(ib[r]), int(ic[r]), limit
                    )
                    pos, pred = _pick(cand, keys, ignores[s + r])
                    exact_calls += 1
            out[s + r] = pred
    if exact_calls:
        logger.debug("analogy: %d of %d questions re-ranked exactly (near ties)", exact_calls, n)
    return out


# --------------------------------------------------------------------------- classification


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per sample: each class shuffled (seeded) and dealt round-robin.

    Every fold gets each class's share to within one document.
    """
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        fold[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return fold


def fit_logistic(
    X: np.ndarray, y: np.ndarray, n_classes: int, C: float = 1.0, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by L-BFGS: returns (W (d, K'), b (K')).

    Minimises ``sum(log-loss) + ||W||^2 / (2C)`` with an unpenalised intercept:
    binary (K' = 1) for two classes, multinomial (K' = K) otherwise, i.e.
    scikit-learn's ``LogisticRegression(C=C)`` objective.
    """
    d = X.shape[1]
    X = np.asarray(X, dtype=np.float64)
    k = 1 if n_classes == 2 else n_classes
    Y = (y == 1).astype(np.float64)[:, None] if k == 1 else np.eye(k)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: d * k].reshape(d, k)
        b = theta[d * k :]
        Z = X @ W + b
        if k == 1:
            loss = np.sum(np.logaddexp(0.0, Z) - Y * Z)
            G = scipy.special.expit(Z) - Y
        else:
            lse = scipy.special.logsumexp(Z, axis=1, keepdims=True)
            loss = np.sum(lse - np.sum(Y * Z, axis=1, keepdims=True))
            G = np.exp(Z - lse) - Y
        loss += 0.5 / C * np.sum(W * W)
        grad = np.concatenate([(X.T @ G + W / C).ravel(), G.sum(axis=0)])
        return float(loss), grad

    res = scipy.optimize.minimize(
        objective,
        np.zeros(d * k + k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-6},
    )
    return res.x[: d * k].reshape(d, k), res.x[d * k :]


def predict_logistic(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Class index per row for parameters from :func:`fit_logistic`."""
    Z = np.asarray(X, dtype=np.float64) @ W + b
    return (Z[:, 0] > 0).astype(np.int64) if W.shape[1] == 1 else np.argmax(Z, axis=1)


def document_features(
    vectors: Vectors, docs: Sequence[Sequence[str]], case_insensitive: bool = True
) -> tuple[np.ndarray, float, int]:
    """Mean of the unit vectors of each document's in-vocabulary tokens.

    Returns (features (n, dim) float64, token coverage, documents without any known token).
    """
    ok = _ok_vocab(vectors, None, case_insensitive)
    flat = [t for doc in docs for t in doc]
    lookup = {t: ok.get(t.upper() if case_insensitive else t, -1) for t in set(flat)}
    ids = np.fromiter((lookup[t] for t in flat), dtype=np.int64, count=len(flat))
    doc_of = np.repeat(np.arange(len(docs)), [len(doc) for doc in docs])
    known = ids >= 0
    used, col = np.unique(ids[known], return_inverse=True)
    # A sparse (documents x used words) count matrix times the used unit rows.
    A = scipy.sparse.csr_matrix(
        (np.ones(int(known.sum())), (doc_of[known], col)), shape=(len(docs), len(used))
    )
    sums = A @ vectors.unit[used].astype(np.float64)
    counts = np.asarray(A.sum(axis=1)).ravel()
    X = np.zeros((len(docs), vectors.dim))
    np.divide(sums, counts[:, None], out=X, where=counts[:, None] > 0)
    coverage = float(known.mean()) if len(flat) else 0.0
    return X, coverage, int(np.sum(counts == 0))


def evaluate_classification(
    vectors: Vectors,
    docs: Sequence[Sequence[str]] | str,
    labels: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    case_insensitive: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """Stratified k-fold accuracy of logistic regression on averaged word vectors.

    ``docs`` is a list of token lists (with ``labels``) or a ``label<TAB>text`` file.
    """
    path = docs if isinstance(docs, str) else None
    if isinstance(docs, str):
        docs, labels = read_classification(docs)
    if labels is None or len(labels) != len(docs):
        raise InputError("classification needs one label per document")
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"{path or 'documents'}: only one class {classes[0]!r}; need two or more")
    smallest = int(np.bincount(y).min())
    if folds < 2 or smallest < folds:
        raise InputError(
            f"{path or 'documents'}: {folds}-fold CV needs >= {folds} documents per class, the "
            f"smallest class has {smallest}; lower evaluate.folds"
        )
    X, coverage, empty = document_features(vectors, docs, case_insensitive)
    fold = stratified_folds(y, folds, seed)
    accs = []
    for f in range(folds):
        train, test = fold != f, fold == f
        mu = X[train].mean(axis=0)
        sd = X[train].std(axis=0)
        sd[sd == 0] = 1.0
        W, b = fit_logistic((X[train] - mu) / sd, y[train], len(classes), C=C)
        pred = predict_logistic((X[test] - mu) / sd, W, b)
        accs.append(float(np.mean(pred == y[test])))
    return {
        "kind": "classification",
        "dataset": name or (_stem(path) if path else "documents"),
        "path": path,
        "metric": "accuracy",
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "folds": folds,
        "seed": seed,
        "C": C,
        "documents": len(docs),
        "classes": [str(c) for c in classes],
        "token_coverage": coverage,
        "empty_documents": empty,
    }


# --------------------------------------------------------------------------- all


def evaluate_all(
    vectors: Vectors,
    datasets: Sequence[EvalDataset] | None = None,
    restrict_vocab: int | None = 30000,
    methods: Sequence[str] = METHODS,
    folds: int = 5,
    seed: int = 0,
    similarity_restrict_vocab: int | None = 300000,
    case_insensitive: bool = True,
) -> dict[str, Any]:
    """Score ``vectors`` on every dataset; a JSON-serialisable dict.

    ``restrict_vocab`` applies to analogies (the N most frequent words),
    ``similarity_restrict_vocab`` to word pairs (gensim's default 300000).
    """
    datasets = default_datasets() if datasets is None else list(datasets)
    out: dict[str, Any] = {
        "vectors": {"words": len(vectors), "dim": vectors.dim},
        "settings": {
            "restrict_vocab": restrict_vocab,
            "similarity_restrict_vocab": similarity_restrict_vocab,
            "methods": list(methods),
            "folds": folds,
            "seed": seed,
            "case_insensitive": case_insensitive,
        },
        "similarity": {},
        "analogy": {},
        "classification": {},
    }
    for ds in datasets:
        logger.info("evaluating %s (%s)", ds.name, ds.kind)
        if ds.kind == "similarity":
            out["similarity"][ds.name] = evaluate_similarity(
                vectors, ds.path, similarity_restrict_vocab, case_insensitive, name=ds.name
            )
        elif ds.kind == "analogy":
            sections = read_analogy(ds.path)
            out["analogy"][ds.name] = {
                m: {
                    **evaluate_analogy(
                        vectors, sections, restrict_vocab, m, case_insensitive, name=ds.name
                    ),
                    "path": ds.path,
                }
                for m in methods
            }
        else:
            docs, labels = read_classification(ds.path)
            res = evaluate_classification(
                vectors, docs, labels, folds, seed, case_insensitive=case_insensitive, name=ds.name
            )
            out["classification"][ds.name] = {**res, "path": ds.path}
    return out

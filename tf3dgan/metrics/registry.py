"""Named shape-quality metrics and the one function the tools call: :func:`evaluate_sets`.

In the manner of stylegan2-ada's ``metric_main.py``: metrics are registered by name
(:func:`register_metric`), each computing one or more result keys.

=======  =========================================  ========================================
name     result keys                                needs
=======  =========================================  ========================================
``iou``  ``mmd_iou``, ``cov_iou``, ``nna_iou``      1 − IoU of the grids (matrix products)
``cd``   ``mmd_cd``, ``cov_cd``, ``nna_cd``         Chamfer distance of 2,048 surface points
``jsd``  ``jsd``                                    per-voxel occupancy counts
``fid``  ``fid``                                    features of the 32³ classifier
``kid``  ``kid``                                    features of the 32³ classifier
=======  =========================================  ========================================

MMD, COV, 1-NNA and JSD are defined in :mod:`tf3dgan.metrics.sets`, the distances in
:mod:`tf3dgan.metrics.distances`; FID and KID come from :mod:`tf3dgan.metrics.features` on the
features of :func:`tf3dgan.metrics.classifier.load_classifier` (imported only when asked for).

Spread.  Every value ``<key>`` comes with ``<key>_std``: the standard deviation (ddof 1) of the
metric over ``spread_subsets`` random half-size subsets, drawn without replacement and
independently from the samples and from the reference (seeded).  This is the delete-half
jackknife (Shao & Wu 1989): with half of the points left out, the variance of the subset values
estimates the variance of the full-set value itself, and it stays valid for non-smooth
statistics such as nearest-neighbour counts.  A bootstrap (drawing with replacement) is not
used because duplicated shapes become each other's nearest neighbours at distance 0, which
breaks 1-NNA and COV.  The values themselves are always those of the full sets.

Floor.  What real shapes score against the reference at the same counts: ``floor=None`` splits
the reference in two random halves (half against half), ``floor=<shape set>`` (e.g. training
shapes) compares a seeded subsample of it, of the samples' count, with the whole reference;
``floor=False`` skips it.  ``result["floor"]`` holds the same keys (with spreads) and its own
``n_samples`` / ``n_reference``; ``result["floor_source"]`` says which.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tf3dgan.metrics import sets
from tf3dgan.metrics.distances import DEFAULT_POINTS, VoxelBits, as_bits, chamfer_distances, iou_distances, surface_point_sets

CLASSIFIER_RESOLUTION = 32


@dataclass(frozen=True)
class Metric:
    name: str
    keys: tuple[str, ...]
    fn: Callable        # fn(context, pair) -> {key: float}
    summary: str


_REGISTRY: dict[str, Metric] = {}

# per result key: (what is ideal, one line)
KEY_INFO: dict[str, tuple[str, str]] = {
    "mmd_iou": ("lower", "MMD-IoU: mean over reference shapes of 1 − IoU with the nearest sample"),
    "cov_iou": ("higher", "COV-IoU: share of reference shapes nearest (1 − IoU) to some sample"),
    "nna_iou": ("0.5", "1-NNA-IoU: leave-one-out 1-NN accuracy telling samples from references"),
    "mmd_cd": ("lower", "MMD-CD: mean over reference shapes of the Chamfer distance to the nearest sample"),
    "cov_cd": ("higher", "COV-CD: share of reference shapes nearest (Chamfer) to some sample"),
    "nna_cd": ("0.5", "1-NNA-CD: leave-one-out 1-NN accuracy (Chamfer distance)"),
    "jsd": ("lower", "JSD (bits) between the marginal voxel-occupancy distributions"),
    "fid": ("lower", "Fréchet distance of classifier features"),
    "kid": ("lower", "KID: kernel distance (unbiased MMD²) of classifier features"),
}


def register_metric(name: str, keys, summary: str = ""):
    """Decorator: register ``fn(context, pair) -> {key: value}`` under ``name``."""
    def deco(fn):
        _REGISTRY[name] = Metric(name, tuple(keys), fn, summary)
        return fn
    return deco


def list_metrics() -> tuple[str, ...]:
    """Names of the registered metrics."""
    return tuple(_REGISTRY)


def is_valid_metric(name: str) -> bool:
    return name in _REGISTRY


def metric_keys(metrics=None) -> tuple[str, ...]:
    """The result keys (without ``_std``) that ``metrics`` (default: all registered) produce."""
    names = list_metrics() if metrics is None else _names(metrics)
    return tuple(k for n in names for k in _REGISTRY[n].keys)


def _names(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = list_metrics() if metrics == "all" else [m.strip() for m in metrics.split(",") if m.strip()]
    names = tuple(dict.fromkeys(metrics))
    bad = [m for m in names if m not in _REGISTRY]
    if bad or not names:
        raise ValueError(f"unknown metric {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"choose from {', '.join(list_metrics())} (or 'all')")
    return names


# ------------------------------------------------------------------ what the metrics read


@dataclass
class Pair:
    """One comparison: rows ``si`` of set ``s`` (the samples' side) against rows ``ri`` of set ``r``."""
    s: str
    si: np.ndarray
    r: str
    ri: np.ndarray

    def matrices(self, ctx: "Context", kind: str):
        """``(d_ss, d_rr, d_sr)`` of distance ``kind`` ('iou' or 'cd') for this comparison."""
        d_sr = ctx.distances(kind, self.s, self.r)[np.ix_(self.si, self.ri)]
        d_ss = ctx.distances(kind, self.s, self.s)[np.ix_(self.si, self.si)]
        d_rr = ctx.distances(kind, self.r, self.r)[np.ix_(self.ri, self.ri)]
        return d_ss, d_rr, d_sr


def fingerprint(bits: VoxelBits) -> str:
    """A key for a shape set's content (sha1 of its packed bits and its side)."""
    return f"{bits.dim}:{len(bits)}:{hashlib.sha1(np.ascontiguousarray(bits.packed).tobytes()).hexdigest()}"


class Context:
    """The shape sets of one evaluation and everything computed from them once (distance
    matrices, surface points, occupancy, classifier features), shared by all metrics and subsets.

    ``cache``: a dict kept by the caller between evaluations; what depends only on the
    reference and floor sets (their distance matrices, surface points, features, and the loaded
    classifier) is kept there under content keys, so evaluating checkpoint after checkpoint
    against one reference computes those once.  Anything involving the samples is not kept.
    """

    def __init__(self, shape_sets: dict[str, VoxelBits], *, cd_points: int = DEFAULT_POINTS, seed: int = 0,
                 workers: int | None = None, classifier=None, iou_chunk: int | None = None,
                 cache: dict | None = None):
        self.sets = shape_sets
        self.cd_points, self.seed, self.workers, self.iou_chunk = cd_points, seed, workers, iou_chunk
        self.shared = cache
        self.local: dict = {}
        self.keys = {name: fingerprint(bits) for name, bits in shape_sets.items()} if cache is not None else {}
        if classifier is None and cache is not None:
            classifier = cache.get(("classifier",))
        self.classifier = classifier
        self.seconds: dict[str, float] = {}

    def _get(self, key: tuple, names: tuple[str, ...], what: str, fn):
        """The cached value of ``key`` (computed by ``fn`` under the timer ``what`` when missing)."""
        shareable = self.shared is not None and "samples" not in names
        store = self.shared if shareable else self.local
        full = key + tuple(self.keys[n] for n in names) if shareable else key + names
        if full not in store:
            t = time.perf_counter()
            store[full] = fn()
            self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - t
        return store[full]

    def distances(self, kind: str, x: str, y: str) -> np.ndarray:
        if kind not in ("iou", "cd"):
            raise ValueError(f"unknown distance {kind!r}")
        if x > y:                                   # one matrix per unordered pair of sets
            return self.distances(kind, y, x).T
        if kind == "iou":
            return self._get(("iou",), (x, y), "iou",
                             lambda: iou_distances(self.sets[x], None if x == y else self.sets[y],
                                                   chunk=self.iou_chunk))
        px, py = self.points(x), self.points(y)
        return self._get(("cd", self.cd_points, self.seed), (x, y), "cd",
                         lambda: chamfer_distances(px, None if x == y else py, workers=self.workers))

    def points(self, x: str) -> np.ndarray:
        return self._get(("points", self.cd_points, self.seed), (x,), "points",
                         lambda: surface_point_sets(self.sets[x], self.cd_points, self.seed))

    def load_classifier(self):
        if self.classifier is None:
            t = time.perf_counter()
            from tf3dgan.metrics.classifier import load_classifier
            self.classifier = load_classifier()
            self.seconds["classifier"] = time.perf_counter() - t
            if self.shared is not None:
                self.shared[("classifier",)] = self.classifier
        return self.classifier

    def features(self, x: str) -> np.ndarray:
        clf = self.load_classifier()
        return self._get(("features", str(getattr(clf, "version", ""))), (x,), "features",
                         lambda: np.asarray(clf.features(classifier_grids(self.sets[x]))))


def classifier_grids(bits: VoxelBits) -> np.ndarray:
    """uint8 ``(N, 32, 32, 32)`` grids for the classifier: 32³ as they are, larger sides (32·2^k)
    OR-pooled down (binvox ``-down``, as ``--resolution 32`` loads the data)."""
    if bits.dim == CLASSIFIER_RESOLUTION:
        return bits.grids()
    factor = bits.dim // CLASSIFIER_RESOLUTION
    if bits.dim % CLASSIFIER_RESOLUTION or factor & (factor - 1):
        raise ValueError(f"fid/kid need grids of side 32 or 32·2^k (the classifier's input is 32³), "
                         f"got {bits.dim}³")
    from tf3dgan.data.datasets import pool, unpack
    return unpack(pool(bits.packed, bits.dim, factor, 1), CLASSIFIER_RESOLUTION)


# ------------------------------------------------------------------ the metrics


def _nn_scores(ctx: Context, pair: Pair, kind: str) -> dict:
    d_ss, d_rr, d_sr = pair.matrices(ctx, kind)
    return {f"mmd_{kind}": sets.mmd(d_sr), f"cov_{kind}": sets.coverage(d_sr),
            f"nna_{kind}": sets.nna(d_ss, d_rr, d_sr)}


@register_metric("iou", ("mmd_iou", "cov_iou", "nna_iou"), "MMD, COV, 1-NNA with the distance 1 − IoU")
def _iou(ctx: Context, pair: Pair) -> dict:
    return _nn_scores(ctx, pair, "iou")


@register_metric("cd", ("mmd_cd", "cov_cd", "nna_cd"), "MMD, COV, 1-NNA with the Chamfer distance of surface points")
def _cd(ctx: Context, pair: Pair) -> dict:
    return _nn_scores(ctx, pair, "cd")


@register_metric("jsd", ("jsd",), "JSD of the marginal occupancy distributions")
def _jsd(ctx: Context, pair: Pair) -> dict:
    p = sets.occupancy(ctx.sets[pair.s].subset(pair.si))
    q = sets.occupancy(ctx.sets[pair.r].subset(pair.ri))
    return {"jsd": sets.jsd_counts(p, q)}


@register_metric("fid", ("fid",), "Fréchet distance of classifier features")
def _fid(ctx: Context, pair: Pair) -> dict:
    from tf3dgan.metrics.features import frechet_distance
    fs, fr = ctx.features(pair.s)[pair.si], ctx.features(pair.r)[pair.ri]
    if min(len(fs), len(fr)) < 2:           # a half-size subset of 2 or 3 shapes: no covariance
        return {"fid": math.nan}
    return {"fid": float(frechet_distance(fs, fr))}


KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


@register_metric("kid", ("kid",), "kernel distance of classifier features")
def _kid(ctx: Context, pair: Pair) -> dict:
    from tf3dgan.metrics.features import kernel_distance
    fs, fr = ctx.features(pair.s)[pair.si], ctx.features(pair.r)[pair.ri]
    if min(len(fs), len(fr)) < 2:
        return {"kid": math.nan}
    mean, _ = kernel_distance(fs, fr, subsets=KID_SUBSETS, subset_size=min(KID_SUBSET_SIZE, len(fs), len(fr)),
                              seed=ctx.seed)
    return {"kid": float(mean)}


DEFAULT = ("iou", "cd", "jsd")        # no trained classifier needed
ALL = ("iou", "cd", "jsd", "fid", "kid")


# ------------------------------------------------------------------ evaluation


def _scores(ctx: Context, pair: Pair, names, spread_subsets: int, rng: np.random.Generator) -> dict:
    out = {}
    for name in names:
        out.update(_REGISTRY[name].fn(ctx, pair))
    hs, hr = len(pair.si) // 2, len(pair.ri) // 2
    if spread_subsets >= 2 and min(hs, hr) < 1:          # a set of one shape has no half
        out.update({f"{key}_std": math.nan for key in list(out)})
    elif spread_subsets >= 2:
        draws = []
        for _ in range(spread_subsets):
            sub = Pair(pair.s, np.sort(rng.choice(pair.si, hs, replace=False)),
                       pair.r, np.sort(rng.choice(pair.ri, hr, replace=False)))
            got = {}
            for name in names:
                got.update(_REGISTRY[name].fn(ctx, sub))
            draws.append(got)
        for key in list(out):
            vals = np.array([d[key] for d in draws], np.float64)
            out[f"{key}_std"] = float(vals.std(ddof=1)) if np.isfinite(vals).all() else math.nan
    return out


def evaluate_sets(samples, reference, *, metrics=DEFAULT, floor=None, seed: int = 0, spread_subsets: int = 10,
                  cd_points: int = DEFAULT_POINTS, workers: int | None = None, classifier=None,
                  iou_chunk: int | None = None, cache: dict | None = None) -> dict:
    """Score generated ``samples`` against ``reference`` shapes with the named ``metrics``.

    ``samples``, ``reference`` (and a ``floor`` set): 0/1 grids ``(N, D, D, D)`` of one side D
    (float grids are thresholded at 0.5; packed bits or a VoxelDataset also do), at least 2
    shapes each.  ``metrics``: names from :func:`list_metrics` (a sequence, a comma-separated
    string or ``'all'``); default :data:`DEFAULT` (iou, cd, jsd).  ``floor``: None (reference
    halves), a real shape set, or False (none) — see the module docstring.  ``seed`` fixes the
    surface points, the floor subsample/halves and the spread subsets.  ``spread_subsets``:
    number of half-size subsets for the ``_std`` keys (below 2: no spreads).  ``cd_points``:
    surface points per shape for the Chamfer distance.  ``workers``: threads for the Chamfer
    distances (default: every core this process may use).  ``cache``: a dict to keep between
    calls against the same reference (see :class:`Context`).  ``classifier``: an object with
    ``features(grids) -> (N, F)`` and ``version``
    (default: :func:`tf3dgan.metrics.classifier.load_classifier`, loaded only for fid/kid).

    Returns a flat dict: the metric keys of :func:`metric_keys` with ``<key>_std``;
    ``n_samples``, ``n_reference``, ``resolution``, ``metrics`` (names run), ``seed``,
    ``spread_subsets``, ``empty_samples`` / ``empty_reference`` (shapes with no voxel),
    ``cd_points`` (with cd), ``classifier_version`` (with fid/kid), ``floor`` (a dict of the same
    keys plus its ``n_samples`` / ``n_reference``) with ``floor_source``, and ``seconds``
    (wall time per part and ``total``).
    """
    t0 = time.perf_counter()
    names = _names(metrics)
    S, R = as_bits(samples), as_bits(reference)
    if S.dim != R.dim:
        raise ValueError(f"samples are {S.dim}³ but the reference is {R.dim}³: compare grids of one resolution")
    if len(S) < 2 or len(R) < 2:
        raise ValueError(f"need at least 2 samples and 2 reference shapes, got {len(S)} and {len(R)}")
    n, m = len(S), len(R)
    shape_sets = {"samples": S, "reference": R}
    floor_pair, floor_source = None, None
    if floor is None:
        perm = np.random.default_rng([seed, 11]).permutation(m)
        h = m // 2
        floor_pair = Pair("reference", np.sort(perm[:h]), "reference", np.sort(perm[h:]))
        floor_source = f"reference halves: {h} vs {m - h} of the {m} reference shapes"
    elif floor is not False:
        F = as_bits(floor)
        if F.dim != R.dim:
            raise ValueError(f"the floor set is {F.dim}³ but the reference is {R.dim}³")
        k = min(len(F), n)
        if k < 2:
            raise ValueError(f"the floor set needs at least 2 shapes, got {len(F)}")
        idx = np.sort(np.random.default_rng([seed, 12]).choice(len(F), k, replace=False))
        shape_sets["floor"] = F.subset(idx)
        floor_pair = Pair("floor", np.arange(k), "reference", np.arange(m))
        floor_source = (f"floor set: {k} of its {len(F)} shapes (seeded subsample) vs the {m} reference shapes"
                        if k < len(F) else f"floor set: its {k} shapes vs the {m} reference shapes")
    ctx = Context(shape_sets, cd_points=cd_points, seed=seed, workers=workers, classifier=classifier,
                  iou_chunk=iou_chunk, cache=cache)
    result: dict = {"n_samples": n, "n_reference": m, "resolution": R.dim, "metrics": list(names), "seed": seed,
                    "spread_subsets": spread_subsets,
                    "empty_samples": int((S.volumes == 0).sum()), "empty_reference": int((R.volumes == 0).sum())}
    if "cd" in names:
        result["cd_points"] = cd_points
    result.update(_scores(ctx, Pair("samples", np.arange(n), "reference", np.arange(m)), names, spread_subsets,
                          np.random.default_rng([seed, 21])))
    if floor_pair is not None:
        result["floor_source"] = floor_source
        result["floor"] = {"n_samples": len(floor_pair.si), "n_reference": len(floor_pair.ri),
                           **_scores(ctx, floor_pair, names, spread_subsets, np.random.default_rng([seed, 22]))}
    if ctx.classifier is not None and ("fid" in names or "kid" in names):
        result["classifier_version"] = str(ctx.classifier.version)
    result["seconds"] = {**{k: round(v, 3) for k, v in ctx.seconds.items()},
                         "total": round(time.perf_counter() - t0, 3)}
    return result


# ------------------------------------------------------------------ text


def _fmt(v) -> str:
    if v is None:
        return "-"
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.3f}"
    if a >= 0.01:
        return f"{v:.4f}"
    return f"{v:.2e}"


def _with_spread(d: dict, key: str) -> str:
    text = _fmt(d.get(key))
    if f"{key}_std" in d:
        text += f" ± {_fmt(d[f'{key}_std'])}"
    return text


def describe(result: dict) -> str:
    """The result of :func:`evaluate_sets` as a text table: metric, value ± spread, floor, ideal."""
    keys = [k for k in KEY_INFO if k in result] + [k for k in result if k in metric_keys() and k not in KEY_INFO]
    floor = result.get("floor")
    rows = [("metric", "value", "floor (real vs real)" if floor else "", "ideal")]
    for k in keys:
        rows.append((k, _with_spread(result, k), _with_spread(floor, k) if floor else "",
                     KEY_INFO.get(k, ("", ""))[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{result['n_samples']} samples vs {result['n_reference']} reference shapes at "
             f"{result['resolution']}³"
             + (f"; ± is the std over {result['spread_subsets']} random half-size subsets"
                if result.get("spread_subsets", 0) >= 2 else "")]
    if floor:
        lines.append(f"floor: {result['floor_source']}")
    if result.get("empty_samples"):
        lines.append(f"empty samples: {result['empty_samples']} of {result['n_samples']}")
    if "classifier_version" in result:
        lines.append(f"classifier: {result['classifier_version']}")
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)

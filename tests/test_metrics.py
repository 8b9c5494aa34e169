"""Shape-quality metrics (tf3dgan.metrics): every metric against a direct transcription of its
definition on small hand-made sets (ties and empty shapes included), the degenerate cases
(one shape repeated), two halves of real chairs, and the registry's result."""
from __future__ import annotations

import itertools
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from tf3dgan import metrics
from tf3dgan.data import datasets as data
from tf3dgan.metrics import distances, sets

ROOT = Path(__file__).resolve().parents[1]
CHAIRS = ROOT.parent / "shared" / "data" / "voxels" / "modelnet10_chair_64_win.npz"
SMALL = ROOT / "tests" / "fixtures" / "modelnet10_chair_64_win_small.npz"


def random_grids(rng, n, d=8, p=0.3):
    return (rng.random((n, d, d, d)) < p).astype(np.uint8)


def box(d, lo, hi):
    g = np.zeros((d, d, d), np.uint8)
    g[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return g


@pytest.fixture(scope="module")
def small_chairs():
    """The 12 + 4 real chairs of the fixture, OR-pooled from 64³ to 32³."""
    return (data.load_dataset(f"{SMALL}:train", resolution=32).grids(),
            data.load_dataset(f"{SMALL}:test", resolution=32).grids())


# ------------------------------------------------------------------ the package


def test_the_package_keeps_the_old_module_names():
    from tf3dgan.metrics import matching
    assert metrics.sample_quality is matching.sample_quality
    assert metrics.binarize is matching.binarize and metrics.iou_matrix is matching.iou_matrix
    for name in metrics.__all__:
        assert hasattr(metrics, name), name


# ------------------------------------------------------------------ IoU distance


def iou_distance_loop(a, b):
    out = np.empty((len(a), len(b)))
    for i, j in itertools.product(range(len(a)), range(len(b))):
        x, y = a[i].astype(bool), b[j].astype(bool)
        union = (x | y).sum()
        out[i, j] = 0.0 if union == 0 else 1.0 - (x & y).sum() / union
    return out


def test_iou_distances_match_the_definition_with_empty_grids_and_copies():
    rng = np.random.default_rng(0)
    a = random_grids(rng, 7)
    a[2] = 0                     # empty
    a[5] = a[1]                  # a copy
    b = random_grids(rng, 5, p=0.5)
    b[0] = 0
    b[3] = a[1]
    want = iou_distance_loop(a, b)
    got = distances.iou_distances(a, b)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[2, 0] == 0.0                    # two empty grids: IoU 1
    assert (got[2, 1:] == 1.0).all()           # empty vs non-empty: 1
    assert got[1, 3] == 0.0 and got[5, 3] == 0.0
    # every input form gives the same matrix: bool, float (> 0.5), 5-D, packed bits, a VoxelDataset
    packed = data.pack(b)
    ds = data.VoxelDataset(packed=packed, dim=8, names=[str(i) for i in range(len(b))], source="test")
    for other in (b.astype(bool), b * 0.8 + 0.1, b[..., None], packed, ds):
        np.testing.assert_array_equal(distances.iou_distances(a, other), got)
    np.testing.assert_array_equal(distances.iou_distances(a), distances.iou_distances(a, a))
    np.testing.assert_allclose(distances.iou_distances(a), iou_distance_loop(a, a), atol=1e-12)


def test_iou_chunking_gives_the_same_matrix():
    rng = np.random.default_rng(1)
    a, b = random_grids(rng, 23, 16), random_grids(rng, 17, 16, 0.1)
    whole_ab, whole_aa = distances.iou_distances(a, b, chunk=1000), distances.iou_distances(a, chunk=1000)
    for chunk in (1, 3, 7, 16, None):
        np.testing.assert_array_equal(distances.iou_distances(a, b, chunk=chunk), whole_ab)
        np.testing.assert_array_equal(distances.iou_distances(a, chunk=chunk), whole_aa)
    np.testing.assert_array_equal(whole_aa, whole_aa.T)
    assert (np.diagonal(whole_aa) == 0).all()


def test_iou_refuses_different_sides():
    with pytest.raises(ValueError, match="side"):
        distances.iou_distances(np.zeros((2, 8, 8, 8)), np.zeros((2, 16, 16, 16)))


# ------------------------------------------------------------------ surface points and Chamfer distance


def test_surface_points_are_seeded_area_weighted_and_in_the_unit_sphere(small_chairs):
    grid = small_chairs[0][3]
    p = distances.surface_points(grid, 4000, seed=5)
    assert p.shape == (4000, 3)
    np.testing.assert_array_equal(p, distances.surface_points(grid, 4000, seed=5))
    assert not np.array_equal(p, distances.surface_points(grid, 4000, seed=6))
    r = np.linalg.norm(p, axis=1)
    assert r.max() <= 1 + 1e-9 and r.max() > 0.9
    # an independent area-weighted sampler (trimesh) on the same surface, normalised the same way
    import trimesh
    from skimage.measure import marching_cubes
    v, f, _, _ = marching_cubes(np.pad(grid, 1).astype(np.float32), 0.5)
    c = (v.min(0) + v.max(0)) / 2
    q, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), 20000, seed=0)
    q = (q - c) / np.linalg.norm(v - c, axis=1).max()
    np.testing.assert_allclose(np.abs(p).mean(0), np.abs(q).mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(p.T), np.cov(q.T), atol=0.01)


def test_surface_points_of_an_empty_grid_are_nan():
    p = distances.surface_points(np.zeros((8, 8, 8)), 10)
    assert p.shape == (10, 3) and np.isnan(p).all()


def test_chamfer_of_a_shape_with_itself_and_a_translated_copy_is_zero(small_chairs):
    chair = small_chairs[0][1]
    moved = np.zeros_like(chair)
    idx = np.argwhere(chair)
    lo, hi = idx.min(0), idx.max(0)
    shift = np.where(hi + 3 < 32, 3, np.where(lo >= 2, -2, 0))    # as far as the grid allows, per axis
    assert shift.any() and (idx + shift).min() >= 0 and (idx + shift).max() < 32
    moved[tuple((idx + shift).T)] = 1
    p, q = distances.surface_points(chair, 1024), distances.surface_points(moved, 1024)
    np.testing.assert_allclose(p, q, atol=1e-12)                     # centring removes the translation
    other = distances.surface_points(small_chairs[0][2], 1024)
    d = distances.chamfer_distances([p, q, distances.surface_points(chair, 1024, seed=9), other])
    assert d[0, 1] < 1e-6 and d[0, 0] == 0
    assert distances.chamfer_distances([p], [p.copy()])[0, 0] < 1e-6
    assert d[0, 2] < 0.2 * d[0, 3]           # other points on the same surface: small next to another chair


def chamfer_loop(A, B):
    out = np.empty((len(A), len(B)))
    for i, j in itertools.product(range(len(A)), range(len(B))):
        a, b = A[i], B[j]
        ea, eb = np.isnan(a).all(), np.isnan(b).all()
        if ea or eb:
            out[i, j] = 0.0 if ea and eb else np.inf
            continue
        sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        out[i, j] = sq.min(1).mean() + sq.min(0).mean()
    return out


@pytest.mark.parametrize("method", ["gemm", "kdtree"])
def test_chamfer_matches_the_definition(method):
    rng = np.random.default_rng(2)
    A = [rng.uniform(-1, 1, (n, 3)) for n in (40, 75, 3, 60)]
    B = [rng.uniform(-1, 1, (n, 3)) * 0.5 for n in (50, 1, 90)]
    A.append(np.full((30, 3), np.nan))               # an empty shape
    B.append(np.full((20, 3), np.nan))
    B.append(A[1].copy())
    want = chamfer_loop(A, B)
    tol = dict(rtol=1e-5, atol=1e-6) if method == "gemm" else dict(rtol=1e-12, atol=0)
    got = distances.chamfer_distances(A, B, method=method, workers=1)
    np.testing.assert_allclose(got, want, **tol)
    assert np.isinf(got[4, :3]).all() and got[4, 3] == 0 and np.isinf(got[:4, 3]).all()
    assert got[1, 4] < 1e-5
    np.testing.assert_array_equal(distances.chamfer_distances(A, B, method=method, workers=3), got)
    sym = distances.chamfer_distances(A, method=method)
    np.testing.assert_allclose(sym, chamfer_loop(A, A), **tol)
    np.testing.assert_array_equal(sym, sym.T)
    assert (np.diagonal(sym) == 0).all()


# ------------------------------------------------------------------ set metrics


def mmd_loop(d):
    n, m = d.shape
    return sum(min(d[i, j] for i in range(n)) for j in range(m)) / m


def coverage_loop(d):
    n, m = d.shape
    covered = set()
    for i in range(n):
        row = list(d[i])
        if m > 1 and min(row) == max(row):      # equally far from every reference: covers none
            continue
        covered.add(row.index(min(row)))         # ties: the lowest index
    return len(covered) / m


def nna_loop(d_ss, d_rr, d_sr):
    n, m = d_sr.shape
    label = [0] * n + [1] * m

    def dist(p, q):
        if p < n and q < n:
            return d_ss[p, q]
        if p >= n and q >= n:
            return d_rr[p - n, q - n]
        return d_sr[p, q - n] if p < n else d_sr[q, p - n]

    total = 0.0
    for p in range(n + m):
        others = [q for q in range(n + m) if q != p]
        best = min(dist(p, q) for q in others)
        tied = [q for q in others if dist(p, q) == best]
        total += sum(label[q] == label[p] for q in tied) / len(tied)
    return total / (n + m)


def random_symmetric(rng, n, levels):
    d = rng.integers(0, levels, (n, n)).astype(float)
    d = np.triu(d, 1)
    return d + d.T


def test_set_metrics_match_their_definitions_with_ties_and_infinities():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n, m = rng.integers(1, 7, 2)
        if n + m < 2:
            continue
        levels = int(rng.integers(2, 5))           # few distinct values: many ties
        d_sr = rng.integers(0, levels, (n, m)).astype(float)
        d_ss, d_rr = random_symmetric(rng, n, levels), random_symmetric(rng, m, levels)
        if trial % 3 == 0:                         # some +inf (Chamfer distance to an empty shape)
            d_sr[rng.random((n, m)) < 0.3] = np.inf
        assert sets.mmd(d_sr) == pytest.approx(mmd_loop(d_sr))
        assert sets.coverage(d_sr) == pytest.approx(coverage_loop(d_sr))
        assert sets.nna(d_ss, d_rr, d_sr) == pytest.approx(nna_loop(d_ss, d_rr, d_sr))


def test_hand_made_ties():
    # sample 0 is nearest to references 1 and 2 (tie → 1), sample 1 equally far from all (covers none)
    d_sr = np.array([[0.5, 0.2, 0.2], [0.7, 0.7, 0.7]])
    assert list(sets.nearest_references(d_sr)) == [1, -1]
    assert sets.coverage(d_sr) == pytest.approx(1 / 3)
    assert sets.mmd(d_sr) == pytest.approx((0.5 + 0.2 + 0.2) / 3)
    # one reference: any sample covers it
    assert sets.coverage(np.array([[0.3], [0.3]])) == 1.0
    # 1-NNA: s0's nearest are s1 (same) and r0 (other) at 0.1 → counts 1/2
    d_ss = np.array([[0, 0.1], [0.1, 0]])
    d_rr = np.array([[0, 0.9], [0.9, 0]])
    d_sr = np.array([[0.1, 0.8], [0.5, 0.6]])
    # s0: {s1, r0} → 0.5; s1: s0 → 1; r0: s0 → 0; r1: s1 (0.6) → 0
    assert sets.nna(d_ss, d_rr, d_sr) == pytest.approx(1.5 / 4)
    assert sets.nna(d_ss, d_rr, d_sr, per_set=True) == pytest.approx((1.5 / 4, 0.75, 0.0))
    # identical sets (everything at distance 0): the expected accuracy of random tie-breaking
    z = np.zeros
    assert sets.nna(z((3, 3)), z((3, 3)), z((3, 3))) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="NaN"):
        sets.mmd(np.array([[np.nan]]))


def test_jsd_matches_the_definition():
    rng = np.random.default_rng(4)
    a, b = random_grids(rng, 6, 8, 0.2), random_grids(rng, 9, 8, 0.4)
    p, q = a.reshape(6, -1).sum(0), b.reshape(9, -1).sum(0)
    assert sets.jsd(a, b) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    np.testing.assert_array_equal(sets.occupancy(data.pack(a)), p)
    assert sets.jsd(a, a) == 0.0
    assert sets.jsd(a[:3], a[3:]) > 0
    left, right = np.zeros((2, 8, 8, 8), np.uint8), np.zeros((2, 8, 8, 8), np.uint8)
    left[:, :4], right[:, 4:] = 1, 1
    assert sets.jsd(left, right) == pytest.approx(1.0)        # disjoint occupancy: 1 bit
    assert sets.jsd(np.zeros((2, 8, 8, 8)), left) == 1.0       # an all-empty set
    assert sets.jsd(np.zeros((2, 8, 8, 8)), np.zeros((3, 8, 8, 8))) == 0.0


# ------------------------------------------------------------------ degenerate and real sets


def test_one_shape_repeated_is_separable_and_covers_one_reference(small_chairs):
    reference = small_chairs[0]                              # 12 real chairs
    repeated = np.repeat(box(32, (12, 12, 12), (20, 20, 20))[None], 12, 0)     # nearest to no chair
    r = metrics.evaluate_sets(repeated, reference, metrics="iou,cd,jsd", floor=False, spread_subsets=0,
                              cd_points=256)
    for kind in ("iou", "cd"):
        assert r[f"nna_{kind}"] == 1.0
        assert r[f"cov_{kind}"] == pytest.approx(1 / 12)
    assert r["jsd"] > 0.3


def test_two_halves_of_real_chairs_are_indistinguishable():
    if not CHAIRS.exists():
        pytest.skip(f"{CHAIRS} is not here")
    chairs = data.load_dataset(f"{CHAIRS}:train", resolution=32, limit=160).grids()
    r = metrics.evaluate_sets(chairs[:40], chairs[40:80], metrics="iou,cd,jsd", floor=chairs[80:160],
                              cd_points=256, spread_subsets=4)
    assert r["floor"]["n_samples"] == 40 and r["floor"]["n_reference"] == 40
    for kind in ("iou", "cd"):
        assert abs(r[f"nna_{kind}"] - 0.5) <= 0.15, r
        assert abs(r[f"cov_{kind}"] - r["floor"][f"cov_{kind}"]) <= 0.15, r
        assert 0.3 <= r[f"cov_{kind}"] <= 0.8
    # the blob and the data mean are told apart from real chairs
    blob = np.repeat(box(32, (8, 8, 8), (24, 24, 24))[None], 40, 0)
    mean = np.repeat((chairs[:80].mean(0) > 0.5)[None], 40, 0)
    for fake in (blob, mean):
        f = metrics.evaluate_sets(fake, chairs[40:80], metrics="iou", floor=False, spread_subsets=0)
        assert f["nna_iou"] > 0.9 and f["cov_iou"] <= 0.05


def test_empty_samples_are_nobodys_nearest_neighbour(small_chairs):
    reference = small_chairs[0]
    samples = small_chairs[1].copy()
    samples[[0, 2]] = 0                          # two empty samples among 4
    r = metrics.evaluate_sets(samples, reference, metrics="iou,cd", floor=False, spread_subsets=0, cd_points=256)
    assert r["empty_samples"] == 2
    ok = metrics.evaluate_sets(small_chairs[1][[1, 3]], reference, metrics="iou,cd", floor=False,
                               spread_subsets=0, cd_points=256)
    for kind in ("iou", "cd"):
        assert r[f"cov_{kind}"] == ok[f"cov_{kind}"]         # the empties cover nothing
    p = distances.surface_point_sets(np.concatenate([samples, reference]), 128)
    d = distances.chamfer_distances(p)
    assert np.isinf(d[0, 4:]).all() and d[0, 2] == 0
    nearest = np.where(np.eye(len(d), dtype=bool), np.inf, d)[4:].argmin(1)
    assert not np.isin(nearest, [0, 2]).any()


# ------------------------------------------------------------------ the registry


def test_registry_keys_values_and_floor(small_chairs):
    ref, samples = small_chairs
    samples = np.concatenate([samples, ref[:2]])           # 6 samples, 12 references
    r = metrics.evaluate_sets(samples, ref, metrics=metrics.DEFAULT, cd_points=128, spread_subsets=5)
    keys = ["mmd_iou", "cov_iou", "nna_iou", "mmd_cd", "cov_cd", "nna_cd", "jsd"]
    assert list(metrics.metric_keys(metrics.DEFAULT)) == keys
    for k in keys:
        assert np.isfinite(r[k]) and r[f"{k}_std"] >= 0 and k in r["floor"] and f"{k}_std" in r["floor"]
    assert "fid" not in r and "kid" not in r and "classifier_version" not in r
    assert (r["n_samples"], r["n_reference"], r["resolution"]) == (6, 12, 32)
    assert r["floor_source"].startswith("reference halves: 6 vs 6")
    assert (r["floor"]["n_samples"], r["floor"]["n_reference"]) == (6, 6)
    for k in ("cov_iou", "nna_iou", "cov_cd", "nna_cd"):
        assert 0 <= r[k] <= 1 and 0 <= r["floor"][k] <= 1
    # the values are the set functions on the distance matrices
    d_sr, d_ss, d_rr = (distances.iou_distances(samples, ref), distances.iou_distances(samples),
                        distances.iou_distances(ref))
    assert r["mmd_iou"] == sets.mmd(d_sr) and r["cov_iou"] == sets.coverage(d_sr)
    assert r["nna_iou"] == sets.nna(d_ss, d_rr, d_sr) and r["jsd"] == sets.jsd(samples, ref)
    p_s, p_r = distances.surface_point_sets(samples, 128), distances.surface_point_sets(ref, 128)
    assert r["mmd_cd"] == pytest.approx(sets.mmd(distances.chamfer_distances(p_s, p_r)), rel=1e-6)
    # a floor set no larger than the samples is used whole: its floor is its own evaluation
    f = metrics.evaluate_sets(samples, ref, metrics="iou,jsd", floor=ref[6:10], spread_subsets=0)
    alone = metrics.evaluate_sets(ref[6:10], ref, metrics="iou,jsd", floor=False, spread_subsets=0)
    assert f["floor_source"] == "floor set: its 4 shapes vs the 12 reference shapes"
    assert {k: f["floor"][k] for k in ("mmd_iou", "cov_iou", "nna_iou", "jsd")} == \
           {k: alone[k] for k in ("mmd_iou", "cov_iou", "nna_iou", "jsd")}
    assert "floor" not in alone and "mmd_iou_std" not in alone
    big = metrics.evaluate_sets(samples[:3], ref, metrics="iou", floor=ref, spread_subsets=0)
    assert big["floor"]["n_samples"] == 3 and "3 of its 12 shapes" in big["floor_source"]
    tiny = metrics.evaluate_sets(samples[:2], ref[:3], metrics="iou,jsd", spread_subsets=3)
    assert np.isfinite(tiny["nna_iou_std"]) and np.isnan(tiny["floor"]["nna_iou_std"])   # halves of 1 and 2
    table = metrics.describe(r)
    assert all(k in table for k in keys) and "±" in table and "reference halves" in table
    with pytest.raises(ValueError, match="unknown metric 'nope'.*iou"):
        metrics.evaluate_sets(samples, ref, metrics=("iou", "nope"))
    with pytest.raises(ValueError, match="resolution"):
        metrics.evaluate_sets(samples, ref[:, ::2, ::2, ::2])


def test_the_cache_keeps_only_the_reference_side(small_chairs):
    ref, samples = small_chairs
    cache = {}
    first = metrics.evaluate_sets(samples, ref, metrics="iou,cd", cd_points=64, spread_subsets=3, cache=cache)
    size = len(cache)
    again = metrics.evaluate_sets(samples, ref, metrics="iou,cd", cd_points=64, spread_subsets=3, cache=cache)
    other = metrics.evaluate_sets(ref[:4], ref, metrics="iou,cd", cd_points=64, spread_subsets=3, cache=cache)
    assert len(cache) == size == 3          # d_rr for iou and cd, the reference's points
    def strip(d):
        return {k: v for k, v in d.items() if k != "seconds"}
    assert strip(first) == strip(again)
    assert other["n_samples"] == 4 and other["cov_iou"] == 4 / 12


def test_fid_and_kid_call_the_classifier_and_feature_functions(small_chairs, monkeypatch):
    calls = []

    class FakeClassifier:
        version = "fake-7"

        def features(self, grids):
            assert grids.dtype == np.uint8 and grids.shape[1:] == (32, 32, 32)
            calls.append(len(grids))
            g = grids.reshape(len(grids), -1).astype(np.float64)
            return np.stack([g.mean(1), g[:, : 32 ** 3 // 2].mean(1)], 1)

    def frechet_distance(f1, f2):
        return float(((f1.mean(0) - f2.mean(0)) ** 2).sum() * 1000)

    def kernel_distance(f1, f2, subsets=100, subset_size=1000, seed=0):
        assert subset_size <= min(len(f1), len(f2)) or subset_size == 1000
        return float(abs(f1.mean() - f2.mean())), 0.0

    clf_mod = types.ModuleType("tf3dgan.metrics.classifier")
    clf_mod.load_classifier = FakeClassifier
    feat_mod = types.ModuleType("tf3dgan.metrics.features")
    feat_mod.frechet_distance, feat_mod.kernel_distance = frechet_distance, kernel_distance
    monkeypatch.setitem(sys.modules, "tf3dgan.metrics.classifier", clf_mod)
    monkeypatch.setitem(sys.modules, "tf3dgan.metrics.features", feat_mod)
    ref, samples = small_chairs
    r = metrics.evaluate_sets(samples, ref, metrics="fid,kid", spread_subsets=3)
    assert r["classifier_version"] == "fake-7" and calls == [4, 12]        # features once per set
    f_s, f_r = FakeClassifier().features(samples), FakeClassifier().features(ref)
    assert r["fid"] == frechet_distance(f_s, f_r) and r["kid"] == kernel_distance(f_s, f_r)[0]
    assert {"fid_std", "kid_std"} <= set(r) and {"fid", "kid"} <= set(r["floor"])
    # 64³ grids are OR-pooled to the classifier's 32³
    grids64 = data.load_dataset(f"{SMALL}:test").grids()
    r64 = metrics.evaluate_sets(grids64, grids64, metrics="fid", floor=False, spread_subsets=0,
                                classifier=FakeClassifier())
    assert r64["fid"] == 0.0
    with pytest.raises(ValueError, match="32"):
        metrics.evaluate_sets(samples[:, ::2, ::2, ::2], ref[:, ::2, ::2, ::2], metrics="fid")


def test_the_feature_functions_have_the_interface_the_registry_calls():
    features = pytest.importorskip("tf3dgan.metrics.features")
    rng = np.random.default_rng(5)
    f1, f2 = rng.standard_normal((30, 8)), rng.standard_normal((30, 8)) + 0.5
    assert isinstance(float(features.frechet_distance(f1, f2)), float)
    mean, std = features.kernel_distance(f1, f2, subsets=5, subset_size=20, seed=0)
    assert np.isfinite(mean) and np.isfinite(std)


def test_iou_through_keras_ops_equals_numpy():
    pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    a = (rng.random((7, 16, 16, 16)) < 0.3).astype(np.uint8)
    b = (rng.random((5, 16, 16, 16)) < 0.2).astype(np.uint8)
    b[0] = 0
    want = distances.iou_distances(a, b, device="numpy")
    np.testing.assert_array_equal(distances.iou_distances(a, b, device="keras", chunk=3), want)
    np.testing.assert_array_equal(distances.iou_distances(a, device="keras", chunk=2),
                                  distances.iou_distances(a, device="numpy"))
    with pytest.raises(ValueError, match="device must be"):
        distances.iou_distances(a, b, device="gpu")

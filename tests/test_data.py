"""Tests for tf3dgan.data.binvox, tf3dgan.data.synthetic and tf3dgan.data.datasets (pure numpy, a few seconds)."""
from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tf3dgan.data import binvox, synthetic
from tf3dgan.data import datasets as data
from tf3dgan.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"
CHAIRS = FIXTURES / "chair" / "train"
STEMS = ["chair_0013", "chair_0037", "chair_0040"]
WIN_NPZ = FIXTURES / "modelnet10_chair_64_win_small.npz"
SOMTAMBE_NPZ = FIXTURES / "somtambe_chair_32_small.npz"
SHARED_CHAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "voxels" / "modelnet10_chair_64_win.npz"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own pooled-grid cache folder (never ~/.cache)."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv(data.CACHE_ENV, str(folder))
    return folder


def assert_data_error(excinfo, *fragments: str) -> None:
    """The error must be one line and contain every fragment (the path among them)."""
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"


def copy_chairs(dest: Path, suffixes=(".raw",), stems=STEMS) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        for suffix in suffixes:
            shutil.copy(CHAIRS / f"{stem}{suffix}", dest)
    return dest


def random_grids(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, dim, dim, dim)) < 0.3).astype(np.uint8)


# ----------------------------------------------------------------- binvox


@pytest.mark.parametrize("stem", STEMS)
def test_binvox_decodes_to_the_raw_of_the_same_mesh(stem):
    raw = binvox.read_raw(CHAIRS / f"{stem}.raw")
    grid = binvox.read_binvox(CHAIRS / f"{stem}.binvox")
    assert raw.shape == grid.shape == (64, 64, 64)
    assert raw.dtype == grid.dtype == np.uint8
    assert set(np.unique(raw)) == {0, 1}
    np.testing.assert_array_equal(raw, np.fromfile(CHAIRS / f"{stem}.raw", np.uint8).reshape(64, 64, 64) > 0)
    np.testing.assert_array_equal(grid, raw)


def test_raw_order_is_x_up_y():
    # binvox without -cb puts the bbox minimum at 0 on every axis; chairs are taller (z,
    # axis 1) than wide, so the longest side, which touches 63, is z for this chair.
    raw = binvox.read_raw(CHAIRS / "chair_0013.raw")
    occupied = np.argwhere(raw)
    assert (occupied.min(axis=0) == 0).all()
    assert occupied.max(axis=0)[1] == 63


def test_32_binvox_matches_somtambe_data_transposed():
    grid = binvox.read_binvox(CHAIRS / "chair_0013.d32_e_cb.binvox")
    assert grid.shape == (32, 32, 32) and grid.any()
    somtambe = data.load_dataset(SOMTAMBE_NPZ)
    # SomTambe's arrays are [x][y][z]; binvox native order is [x][z][y].
    np.testing.assert_array_equal(somtambe.grids(15)[0], grid.transpose(0, 2, 1))


@pytest.mark.parametrize("stem", STEMS)
def test_raw_round_trip_is_byte_identical(tmp_path, stem):
    out = tmp_path / "out.raw"
    binvox.write_raw(out, binvox.read_raw(CHAIRS / f"{stem}.raw"))
    assert out.read_bytes() == (CHAIRS / f"{stem}.raw").read_bytes()


@pytest.mark.parametrize("name", [f"{s}.binvox" for s in STEMS] + ["chair_0013.d32_e_cb.binvox"])
def test_binvox_round_trip_is_byte_identical(tmp_path, name):
    header = binvox.read_binvox_header(CHAIRS / name)
    out = tmp_path / "out.binvox"
    binvox.write_binvox(out, binvox.read_binvox(CHAIRS / name), header.translate, header.scale)
    assert out.read_bytes() == (CHAIRS / name).read_bytes()


def test_binvox_header_values():
    header = binvox.read_binvox_header(CHAIRS / "chair_0013.binvox")
    assert header.dim == 64
    assert header.translate == pytest.approx((-8.125, -9.59293, -18.013))
    assert header.scale == pytest.approx(36.0259)


@pytest.mark.parametrize("fill", ["empty", "full", "random"])
def test_binvox_write_read_handles_long_runs(tmp_path, fill):
    grid = {"empty": np.zeros((32,) * 3, np.uint8), "full": np.ones((32,) * 3, bool),
            "random": random_grids(1, 32)[0] * 7}[fill]
    binvox.write_binvox(tmp_path / "g.binvox", grid)
    binvox.write_raw(tmp_path / "g.raw", grid)
    np.testing.assert_array_equal(binvox.read_binvox(tmp_path / "g.binvox"), grid != 0)
    np.testing.assert_array_equal(binvox.read_raw(tmp_path / "g.raw"), grid != 0)
    assert set(np.unique(np.fromfile(tmp_path / "g.raw", np.uint8))) <= {0, 255}


def test_writers_reject_non_cubic_grids(tmp_path):
    with pytest.raises(ValueError):
        binvox.write_raw(tmp_path / "x.raw", np.zeros((4, 4, 8)))
    with pytest.raises(ValueError):
        binvox.write_binvox(tmp_path / "x.binvox", np.zeros((4, 4)))
    assert not list(tmp_path.iterdir())


def _binvox_bytes() -> bytes:
    return (CHAIRS / "chair_0013.binvox").read_bytes()


@pytest.mark.parametrize("content, fragment", [
    (b"hello world", "not a binvox file"),
    (b"#binvox 1\ndim 64 64 64\nscale 1\n", "no 'data' line"),
    (b"#binvox 1\ndim 64 64\ndata\n\x00\xff", "3 numbers"),
    (b"#binvox 1\ndim 8 8 4\ndata\n\x00\xff", "cubic"),
    (b"#binvox 1\ndim 8 8 8\ncolour red\ndata\n\x00\xff", "bad binvox header line"),
    (b"#binvox 1\ndim 2 2 2\ndata\n\x00\x08\x01", "odd number"),
    (b"#binvox 1\ndim 2 2 2\ndata\n\x02\x08", "not 0 or 1"),
    (b"#binvox 1\ndim 2 2 2\ndata\n\x00\x09", "corrupt"),
    (_binvox_bytes()[:-40], "truncated"),
])
def test_malformed_binvox_raises_data_error(tmp_path, content, fragment):
    path = tmp_path / "bad.binvox"
    path.write_bytes(content)
    with pytest.raises(DataError) as excinfo:
        binvox.read_binvox(path)
    assert_data_error(excinfo, path, fragment)


def test_raw_of_non_cube_size_raises(tmp_path):
    path = tmp_path / "bad.raw"
    path.write_bytes(bytes(1000 + 1))
    with pytest.raises(DataError) as excinfo:
        binvox.read_raw(path)
    assert_data_error(excinfo, path, "1001 bytes")


# ---------------------------------------------------------------- synthetic


@pytest.mark.parametrize("kind", synthetic.SHAPE_KINDS)
def test_synthetic_shapes_are_deterministic_binary_and_non_empty(kind):
    a = synthetic.make_shapes(kind, 20, 16, seed=3)
    assert a.shape == (20, 16, 16, 16) and a.dtype == np.uint8
    assert set(np.unique(a)) == {0, 1}
    assert a.reshape(20, -1).any(axis=1).all()
    np.testing.assert_array_equal(a, synthetic.make_shapes(kind, 20, 16, seed=3))
    assert not np.array_equal(a, synthetic.make_shapes(kind, 20, 16, seed=4))


@pytest.mark.parametrize("res", [8, 16, 32])
def test_boxes_are_solid_and_large(res):
    for grid in synthetic.make_shapes("boxes", 200, res, seed=0):
        occupied = np.argwhere(grid)
        lo, hi = occupied.min(axis=0), occupied.max(axis=0) + 1
        assert (hi - lo >= res / 4).all()
        assert len(occupied) == np.prod(hi - lo)  # the bounding box is completely filled


def _bottom_components(grid: np.ndarray) -> int:
    return ndimage.label(grid[:, 0, :])[1]  # axis 1 is up: index 0 is the floor


@pytest.mark.parametrize("kind", ["chairs", "tables"])
@pytest.mark.parametrize("res", [16, 32, 64])
def test_chairs_and_tables_stand_on_four_separate_legs(kind, res):
    grids = synthetic.make_shapes(kind, 100 if res < 64 else 20, res, seed=1)
    assert all(_bottom_components(g) == 4 for g in grids)


def _top_coverage(grid: np.ndarray) -> float:
    """Fraction of the x-y footprint covered by the highest occupied layer."""
    occupied = np.argwhere(grid)
    top = grid[:, occupied[:, 1].max(), :]
    extent = occupied.max(axis=0) - occupied.min(axis=0) + 1
    return top.sum() / (extent[0] * extent[2])


def test_chairs_have_a_back_and_tables_a_flat_top():
    assert max(_top_coverage(g) for g in synthetic.make_shapes("chairs", 50, 32, seed=2)) < 0.5
    assert min(_top_coverage(g) for g in synthetic.make_shapes("tables", 50, 32, seed=2)) == 1.0


def test_furniture_mixes_chairs_and_tables():
    grids = synthetic.make_shapes("furniture", 64, 32, seed=5)
    coverage = np.array([_top_coverage(g) for g in grids])
    assert (coverage == 1.0).sum() >= 10 and (coverage < 0.5).sum() >= 10
    assert all(_bottom_components(g) == 4 for g in grids)


def test_synthetic_is_fast():
    start = time.perf_counter()
    grids = synthetic.make_shapes("furniture", 10_000, 16, seed=0)
    assert time.perf_counter() - start < 3.0
    assert grids.shape == (10_000, 16, 16, 16)


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sofas"):
        synthetic.make_shapes("sofas", 4, 16, 0)
    with pytest.raises(ValueError):
        synthetic.make_shapes("boxes", 4, 4, 0)


# ------------------------------------------------------------ pack / dataset


def test_pack_unpack_round_trip_and_value_rules():
    grids = random_grids(5, 8)
    packed = data.pack(grids)
    assert packed.shape == (5, 64) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, np.packbits(grids.reshape(5, -1), axis=1))
    np.testing.assert_array_equal(data.unpack(packed, 8), grids)
    np.testing.assert_array_equal(data.pack(grids * 255), packed)
    np.testing.assert_array_equal(data.pack(grids.astype(bool)), packed)
    np.testing.assert_array_equal(data.pack(grids * 0.6), packed)  # float: > 0.5 is occupied
    assert not data.pack(grids * 0.5).any()
    np.testing.assert_array_equal(data.pack(grids[0]), packed[:1])


def test_dataset_grids_unpacks_selected_rows():
    grids = random_grids(6, 8)
    ds = data.VoxelDataset(data.pack(grids), 8, [f"g{i}" for i in range(6)], "test")
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.grids(), grids)
    np.testing.assert_array_equal(ds.grids([4, 1]), grids[[4, 1]])
    np.testing.assert_array_equal(ds.grids(2), grids[2:3])
    np.testing.assert_array_equal(ds.grids(slice(1, 3)), grids[1:3])


# ---------------------------------------------------------------- files


def test_load_single_raw_and_binvox_files():
    raw = data.load_dataset(CHAIRS / "chair_0013.raw")
    vox = data.load_dataset(str(CHAIRS / "chair_0013.binvox"))
    assert (len(raw), raw.dim, raw.names) == (1, 64, ["chair_0013"])
    np.testing.assert_array_equal(raw.packed, vox.packed)
    np.testing.assert_array_equal(raw.grids()[0], binvox.read_raw(CHAIRS / "chair_0013.raw"))
    assert raw.source == str(CHAIRS / "chair_0013.raw")


def test_npz_default_and_selected_keys():
    train = data.load_dataset(WIN_NPZ)
    test = data.load_dataset(f"{WIN_NPZ}:test")
    reference = np.load(WIN_NPZ)
    assert (len(train), len(test), train.dim) == (12, 4, 64)
    assert train.names == [f"chair_{i:04d}" for i in range(1, 13)]
    assert test.names == ["chair_0890", "chair_0891", "chair_0892", "chair_0893"]
    np.testing.assert_array_equal(test.packed, reference["test"])
    np.testing.assert_array_equal(train.grids(0)[0], np.unpackbits(reference["train"][0]).reshape(64, 64, 64))
    assert test.source == f"{WIN_NPZ}:test"


def test_npz_missing_key(tmp_path):
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(f"{WIN_NPZ}:valid")
    assert_data_error(excinfo, WIN_NPZ, "'valid'", "train")


def test_npz_with_several_arrays_needs_a_key(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, a=random_grids(2, 8), b=random_grids(2, 8))
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path, "a, b")
    assert len(data.load_dataset(f"{path}:b")) == 2


def test_somtambe_npz_and_resolution_check():
    ds = data.load_dataset(SOMTAMBE_NPZ, resolution=32)
    assert (len(ds), ds.dim) == (16, 32)
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(SOMTAMBE_NPZ, resolution=64)
    assert_data_error(excinfo, SOMTAMBE_NPZ, "voxel grids are 32³ but the model expects 64³")


LAYOUTS = {
    "grid": lambda g: g[0],
    "batch": lambda g: g,
    "channels_first": lambda g: g[:, None],
    "channels_last": lambda g: g[..., None],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.uint8, bool, np.int32, np.float32])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_every_array_layout_and_dtype(tmp_path, layout, dtype, suffix):
    grids = random_grids(3, 16)
    array = LAYOUTS[layout](grids).astype(dtype)
    path = tmp_path / f"shapes{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    else:
        np.savez(path, shapes=array)
    ds = data.load_dataset(path)
    expected = grids[:1] if layout == "grid" else grids
    assert ds.dim == 16 and len(ds) == len(expected)
    np.testing.assert_array_equal(ds.grids(), expected)
    assert len(ds.names) == len(ds) and all(n.startswith("shapes") for n in ds.names)


def test_float_voxels_use_a_half_threshold(tmp_path):
    array = np.zeros((1, 8, 8, 8), np.float32)
    array[0, 0, 0, :3] = [0.4, 0.5, 0.51]
    np.save(tmp_path / "f.npy", array)
    assert data.load_dataset(tmp_path / "f.npy").grids()[0, 0, 0, :3].tolist() == [0, 0, 1]


@pytest.mark.parametrize("shape", [(4, 8, 8, 16), (2, 2, 8, 8, 8), (8, 8), (8,)])
def test_wrong_array_shape(tmp_path, shape):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.uint8))
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path, str(shape), "(N,D,D,D)")


def test_packed_npz_with_impossible_row_length(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, train=np.zeros((3, 100), np.uint8))
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path, "100 bytes")


@pytest.mark.parametrize("side", [12, 4])
def test_grid_side_must_be_a_power_of_two_from_8(tmp_path, side):
    path = tmp_path / "odd.npy"
    np.save(path, np.ones((2, side, side, side), np.uint8))
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path, f"{side}³", "power-of-two")


@pytest.mark.parametrize("name", ["broken.npz", "broken.npy"])
def test_corrupt_array_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 this is not a real archive" if name.endswith("z") else b"\x93NUMPY garbage")
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path, "cannot read")


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path)


def test_missing_file_and_folder():
    with pytest.raises(DataError) as excinfo:
        data.load_dataset("ModelNet10/chair/train")
    assert_data_error(excinfo, "'ModelNet10/chair/train' does not exist",
                      "python tools/convert_data.py -m ModelNet10/chair", "-d synthetic:chairs")
    assert "binvox" not in str(excinfo.value)
    with pytest.raises(DataError) as excinfo:
        data.load_dataset("nowhere/chair_0001.raw")
    assert_data_error(excinfo, "nowhere/chair_0001.raw", "does not exist")
    with pytest.raises(DataError) as excinfo:
        data.load_dataset("nowhere/x.npz:train")
    assert_data_error(excinfo, "nowhere/x.npz", "does not exist")


# -------------------------------------------------------------- folders


def test_folder_is_searched_recursively_in_path_order(tmp_path):
    copy_chairs(tmp_path / "b" / "deep", stems=["chair_0040"])
    copy_chairs(tmp_path / "a", stems=["chair_0037"])
    copy_chairs(tmp_path, suffixes=(".binvox",), stems=["chair_0013"])
    np.save(tmp_path / "c.npy", np.zeros((2, 64, 64, 64), bool))
    (tmp_path / "notes.txt").write_text("not voxels")
    (tmp_path / ".chair-tmp123.raw").write_bytes(b"half-written")  # hidden: an interrupted atomic write
    (tmp_path / ".hidden").mkdir()
    np.save(tmp_path / ".hidden" / "x.npy", np.zeros((8, 8, 8)))
    ds = data.load_dataset(tmp_path)
    assert ds.names == ["chair_0037", "chair_0040", "c_00000", "c_00001", "chair_0013"]
    assert ds.source == str(tmp_path)
    np.testing.assert_array_equal(ds.grids(1)[0], binvox.read_raw(CHAIRS / "chair_0040.raw"))
    assert not ds.grids(2).any()


def test_folder_limit_keeps_the_first_grids(tmp_path):
    copy_chairs(tmp_path)
    ds = data.load_dataset(tmp_path, limit=2)
    assert ds.names == STEMS[:2]
    with pytest.raises(ValueError):
        data.load_dataset(tmp_path, limit=0)


def test_folder_with_mixed_sizes_names_the_odd_file():
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(CHAIRS)
    assert_data_error(excinfo, CHAIRS / "chair_0013.d32_e_cb.binvox", "32³", "64³")


def test_folder_resolution_mismatch(tmp_path):
    copy_chairs(tmp_path / "d")
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(tmp_path / "d", resolution=128)
    assert_data_error(excinfo, tmp_path / "d", "voxel grids are 64³ but the model expects 128³",
                      "--resolution 64 (as stored) or 32, 16 or 8 (pooled down)", "--dim 128")


def test_empty_folder_and_folder_of_meshes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(tmp_path / "empty")
    assert_data_error(excinfo, tmp_path / "empty", "no voxel files")
    meshes = tmp_path / "meshes" / "train"
    meshes.mkdir(parents=True)
    (meshes / "chair_0001.off").write_text("OFF\n0 0 0\n")
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(tmp_path / "meshes")
    assert_data_error(excinfo, tmp_path / "meshes", ".off", "convert")


def test_cache_is_used_when_consistent(tmp_path):
    folder = copy_chairs(tmp_path / "train")
    loose = data.load_dataset(folder)
    # A cache with the same names but different grids shows which one was read.
    fake = data.VoxelDataset(np.zeros_like(loose.packed), 64, loose.names, "fake")
    path = data.write_cache(folder, fake)
    assert path == folder / data.CACHE_NAME
    with np.load(path) as z:
        assert sorted(z.files) == ["dim", "names", "voxels"]
    cached = data.load_dataset(folder)
    assert cached.names == loose.names and not cached.packed.any()
    assert sorted(p.name for p in folder.iterdir()) == sorted([data.CACHE_NAME] + [f"{s}.raw" for s in STEMS])


def test_cache_method_note(tmp_path):
    folder = copy_chairs(tmp_path / "train")
    loose = data.load_dataset(folder)
    path = data.write_cache(folder, loose, method="binvox-win")
    with np.load(path) as z:
        assert sorted(z.files) == ["dim", "method", "names", "voxels"] and str(z["method"]) == "binvox-win"
    for spec in (folder, path):  # the note is never mistaken for voxels
        cached = data.load_dataset(spec)
        assert cached.names == loose.names
        np.testing.assert_array_equal(cached.packed, loose.packed)


def test_cache_is_ignored_when_stale(tmp_path):
    folder = copy_chairs(tmp_path / "train", stems=STEMS[:2])
    stale = data.load_dataset(folder)
    data.write_cache(folder, data.VoxelDataset(np.zeros_like(stale.packed), 64, stale.names, "old"))
    copy_chairs(folder, stems=STEMS[2:])
    fresh = data.load_dataset(folder)
    assert fresh.names == STEMS and fresh.packed.any()


def test_cache_alone_and_nested_caches(tmp_path):
    train = copy_chairs(tmp_path / "chair" / "train")
    test = copy_chairs(tmp_path / "chair" / "test", stems=["chair_0040"])
    data.write_cache(train, data.load_dataset(train))
    for f in train.glob("*.raw"):
        f.unlink()
    only_cache = data.load_dataset(train)
    assert only_cache.names == STEMS
    both = data.load_dataset(tmp_path / "chair")
    assert both.names == ["chair_0040"] + STEMS  # test/ before train/, the cache standing for train/
    np.testing.assert_array_equal(both.packed[1:], only_cache.packed)
    assert data.voxel_files(tmp_path / "chair") == [test / "chair_0040.raw"]


def test_list_of_specs_is_concatenated(tmp_path):
    ds = data.load_dataset([CHAIRS / "chair_0013.raw", f"{WIN_NPZ}:test"])
    assert len(ds) == 5 and ds.names[0] == "chair_0013" and ds.names[1] == "chair_0890"
    assert str(WIN_NPZ) in ds.source and "chair_0013.raw" in ds.source


# ------------------------------------------------------------ synthetic specs


def test_synthetic_spec_defaults_and_options():
    ds = data.load_dataset("synthetic:chairs", resolution=16, seed=7)
    assert (len(ds), ds.dim) == (512, 16)
    np.testing.assert_array_equal(ds.grids(), synthetic.make_shapes("chairs", 512, 16, 7))
    ds = data.load_dataset("synthetic:boxes:n=10:res=8:seed=3", seed=99)
    assert (len(ds), ds.dim, ds.source) == (10, 8, "synthetic:boxes:n=10:res=8:seed=3")
    np.testing.assert_array_equal(ds.grids(), synthetic.make_shapes("boxes", 10, 8, 3))
    assert data.load_dataset("synthetic:tables:n=4").dim == 64
    assert len(data.load_dataset("synthetic:furniture:n=30:res=8", limit=5)) == 5


@pytest.mark.parametrize("spec, fragment", [
    ("synthetic:sofas", "unknown synthetic kind"),
    ("synthetic:chairs:n=many", "must be an integer"),
    ("synthetic:chairs:size=4", "bad synthetic option"),
    ("synthetic:chairs:n", "bad synthetic option"),
    ("synthetic:chairs:n=0", "n must be >= 1"),
    ("synthetic:chairs:res=24", "power of two"),
])
def test_bad_synthetic_specs(spec, fragment):
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(spec)
    assert_data_error(excinfo, spec, fragment)


def test_synthetic_resolution_mismatch():
    with pytest.raises(DataError) as excinfo:
        data.load_dataset("synthetic:chairs:n=2:res=32", resolution=64)
    assert_data_error(excinfo, "synthetic:chairs:n=2:res=32", "32³ but the model expects 64³")


# ------------------------------------------------------------------ pooling


def pool_by_the_rule(grid: np.ndarray, factor: int, pool_min: int) -> np.ndarray:
    """binvox -down -dmin pool_min, written out: one coarse cell at a time."""
    r = grid.shape[0] // factor
    out = np.zeros((r, r, r), np.uint8)
    for i in range(r):
        for j in range(r):
            for k in range(r):
                block = grid[factor * i:factor * (i + 1), factor * j:factor * (j + 1), factor * k:factor * (k + 1)]
                out[i, j, k] = int(block.sum()) >= pool_min
    return out


def real_grids() -> np.ndarray:
    """Two real 64³ chairs: a Linux binvox .raw and a row of the Windows-binvox npz."""
    return np.stack([binvox.read_raw(CHAIRS / "chair_0037.raw"), data.load_dataset(WIN_NPZ).grids(5)[0]])


@pytest.mark.parametrize("factor, pool_min", [(2, 1), (2, 4), (4, 1), (4, 20), (8, 1), (8, 300)])
def test_pool_equals_the_rule_cell_by_cell(factor, pool_min):
    grids = real_grids() if factor < 8 else real_grids()[:1]
    pooled = data.unpack(data.pool(data.pack(grids), 64, factor, pool_min), 64 // factor)
    for grid, got in zip(grids, pooled):
        expected = pool_by_the_rule(grid, factor, pool_min)
        assert expected.any() and not expected.all()
        np.testing.assert_array_equal(got, expected)


def test_pool_rejects_bad_arguments():
    packed = data.pack(random_grids(2, 16))
    for factor, pool_min in [(3, 1), (2, 0), (2, 9)]:
        with pytest.raises(ValueError):
            data.pool(packed, 16, factor, pool_min)


def test_pooled_fixture_chairs_keep_their_shape():
    ds64 = data.load_dataset(WIN_NPZ)
    ds32 = data.load_dataset(WIN_NPZ, resolution=32)
    strict = data.load_dataset(WIN_NPZ, resolution=32, pool_min=4)
    assert (len(ds32), ds32.dim, ds32.pooled_from, ds32.pool_min) == (12, 32, 64, 1)
    assert ds32.names == ds64.names and ds32.source == str(WIN_NPZ)
    assert strict.pool_min == 4 and ds64.pooled_from is None and ds64.pool_min is None
    fill, kept = [], []
    for fine, coarse, majority in zip(ds64.grids(), ds32.grids(), strict.grids()):
        up = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        assert not (fine & ~up).any()                      # OR-pooling covers every voxel of the chair
        fill.append(fine.sum() / up.sum())                 # and not much more (thin parts fill a cell partly)
        kept.append(majority.sum() / coarse.sum())
        lo, hi = np.argwhere(fine).min(0), np.argwhere(fine).max(0)
        clo, chi = np.argwhere(coarse).min(0), np.argwhere(coarse).max(0)
        np.testing.assert_array_equal(clo, lo // 2)         # the same bounding box, halved
        np.testing.assert_array_equal(chi, hi // 2)
        assert not (majority & ~coarse).any()
        assert ndimage.label(coarse)[1] <= ndimage.label(fine)[1]   # OR-pooling never splits a part
    assert min(fill) > 0.3 and np.mean(fill) > 0.6
    assert min(kept) > 0.25 and np.mean(kept) > 0.75       # >= 4 of 8 drops the thinnest parts


@pytest.mark.skipif(not SHARED_CHAIRS.exists(), reason="needs shared/data/voxels (the 875 training chairs)")
def test_the_875_training_chairs_at_32_are_pooled_once_then_read_from_the_cache(user_cache):
    spec = f"{SHARED_CHAIRS}:train"
    start = time.perf_counter()
    first = data.load_dataset(spec, resolution=32)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    second = data.load_dataset(spec, resolution=32)
    warm = time.perf_counter() - start
    assert (len(first), first.dim, first.pooled_from, first.pool_min, first.source) == (875, 32, 64, 1, spec)
    assert not first.pool_cache_hit and second.pool_cache_hit
    assert first.pool_cache == second.pool_cache and Path(first.pool_cache).parent == user_cache / "pooled"
    assert "read from" in second.pooling_note() and "64³ grids OR-pooled to 32³" in second.pooling_note()
    assert second.names == first.names and np.array_equal(second.packed, first.packed)
    np.testing.assert_array_equal(first.packed, data.pool(data.load_dataset(spec).packed, 64, 2))
    assert warm < 0.5 and warm < cold, (cold, warm)
    # another rule, another cache file; the first one is still read
    assert data.load_dataset(spec, resolution=32, pool_min=4).pool_cache != first.pool_cache
    assert data.load_dataset(spec, resolution=32).pool_cache_hit


def test_folder_pooled_cache_lives_beside_the_files_and_follows_them(tmp_path, user_cache):
    folder = copy_chairs(tmp_path / "train")
    first = data.load_dataset(folder, resolution=32)
    cache = folder / "tf3dgan_voxels_32.npz"
    assert first.pool_cache == str(cache) and not first.pool_cache_hit and cache.is_file()
    assert not user_cache.exists()
    second = data.load_dataset(folder, resolution=32)
    assert second.pool_cache_hit and np.array_equal(second.packed, first.packed) and second.names == STEMS
    # the pooled cache is never taken for a voxel file of the folder
    assert data.voxel_files(folder) == [folder / f"{s}.raw" for s in STEMS]
    assert data.load_dataset(folder).names == STEMS and data.load_dataset(tmp_path).names == STEMS
    # a changed file makes the cache stale: pooled again and rewritten
    shutil.copy(CHAIRS / "chair_0013.raw", folder / "chair_0040.raw")
    os.utime(folder / "chair_0040.raw", ns=(1, 1))
    third = data.load_dataset(folder, resolution=32)
    assert not third.pool_cache_hit
    np.testing.assert_array_equal(third.grids(2), third.grids(0))
    assert data.load_dataset(folder, resolution=32).pool_cache_hit
    # a corrupt cache is ignored and rewritten
    cache.write_bytes(b"PK\x03\x04 not a zip")
    fourth = data.load_dataset(folder, resolution=32)
    assert not fourth.pool_cache_hit and np.array_equal(fourth.packed, third.packed)
    assert data.load_dataset(folder, resolution=32).pool_cache_hit


def test_file_pooled_cache_is_stale_when_the_file_changes(tmp_path, user_cache):
    path = tmp_path / "chairs.npz"
    shutil.copy(WIN_NPZ, path)
    a = data.load_dataset(f"{path}:train", resolution=16)
    assert Path(a.pool_cache).parent == user_cache / "pooled" and len(a) == 12
    assert data.load_dataset(f"{path}:train", resolution=16).pool_cache_hit
    test_split = data.load_dataset(f"{path}:test", resolution=16)      # another key, another cache
    assert not test_split.pool_cache_hit and len(test_split) == 4
    with np.load(WIN_NPZ) as z:
        np.savez_compressed(path, train=z["train"][6:], test=z["test"])
    b = data.load_dataset(f"{path}:train", resolution=16)
    assert not b.pool_cache_hit and len(b) == 6
    np.testing.assert_array_equal(b.packed, a.packed[6:])


def test_limit_with_and_without_a_pooled_cache(tmp_path):
    folder = copy_chairs(tmp_path / "train")
    part = data.load_dataset(folder, resolution=32, limit=2)
    assert len(part) == 2 and part.pooled_from == 64 and part.pool_cache is None   # a partial read is not cached
    assert not (folder / "tf3dgan_voxels_32.npz").exists()
    whole = data.load_dataset(folder, resolution=32)
    cut = data.load_dataset(folder, resolution=32, limit=2)
    assert cut.pool_cache_hit and cut.names == STEMS[:2] and np.array_equal(cut.packed, whole.packed[:2])


def test_unwritable_folder_caches_in_the_user_folder_then_warns(tmp_path, user_cache, monkeypatch, capsys):
    folder = copy_chairs(tmp_path / "train")
    real = data.atomic_path

    def read_only_data(path, *a, **k):   # as a read-only data folder answers (chmod cannot stop root)
        if Path(path).parent == folder:
            raise data_write_error(path)
        return real(path, *a, **k)

    monkeypatch.setattr(data, "atomic_path", read_only_data)
    ds = data.load_dataset(folder, resolution=32)
    assert Path(ds.pool_cache).parent == user_cache / "pooled" and not (folder / "tf3dgan_voxels_32.npz").exists()
    assert data.load_dataset(folder, resolution=32).pool_cache_hit
    assert capsys.readouterr().err == ""
    # no writable place at all: one warning line, and the grids all the same
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(data.CACHE_ENV, str(blocker / "cache"))
    again = data.load_dataset(folder, resolution=16)
    err = capsys.readouterr().err
    assert again.pool_cache is None and again.pooled_from == 64 and len(again) == 3
    assert err.count("\n") == 1 and err.startswith("warning: pooled grids of ") and data.CACHE_ENV in err
    assert "Traceback" not in err


def test_folder_without_write_bits_is_never_written_into(tmp_path, user_cache):
    folder = copy_chairs(tmp_path / "train")
    folder.chmod(0o555)          # as ../shared/data is; root could still write there, but must not
    try:
        ds = data.load_dataset(folder, resolution=32)
        assert Path(ds.pool_cache).parent == user_cache / "pooled"
        assert sorted(p.name for p in folder.iterdir()) == [f"{s}.raw" for s in STEMS]
        assert data.load_dataset(folder, resolution=32).pool_cache_hit
    finally:
        folder.chmod(0o755)


def data_write_error(path):
    from tf3dgan.errors import write_error

    return write_error(path, OSError(errno.EROFS, "Read-only file system"))


def test_pooling_lists_and_synthetic_specs(tmp_path):
    ds = data.load_dataset([f"{WIN_NPZ}:train", f"{WIN_NPZ}:test"], resolution=32)
    assert (len(ds), ds.dim, ds.pooled_from) == (16, 32, 64) and ds.pool_cache.count(", ") == 1
    assert data.load_dataset([f"{WIN_NPZ}:train", f"{WIN_NPZ}:test"], resolution=32).pool_cache_hit
    syn = data.load_dataset("synthetic:chairs:n=6:res=32", resolution=8)
    assert (syn.dim, syn.pooled_from, syn.pool_cache) == (8, 32, None)
    np.testing.assert_array_equal(syn.packed, data.pool(data.pack(synthetic.make_shapes("chairs", 6, 32, 0)), 32, 4))
    with pytest.raises(DataError) as excinfo:   # the stored sides must still agree
        data.load_dataset([f"{WIN_NPZ}:train", SOMTAMBE_NPZ], resolution=32)
    assert_data_error(excinfo, SOMTAMBE_NPZ, "32³", "64³", "same size")


@pytest.mark.parametrize("resolution, pool_min, fragments", [
    (128, 1, ["64³ but the model expects 128³", "pooled down, not up", "--resolution 64 (as stored) or 32, 16 or 8",
              "--dim 128"]),
    (48, 1, ["64³ but the model expects 48³", "powers of two >= 8", "--resolution 64"]),
    (4, 1, ["expects 4³", "powers of two >= 8"]),
    (32, 9, ["--pool-min 9", "merges 8 voxels", "--pool-min 1 to 8"]),
    (16, 65, ["--pool-min 65", "--pool-min 1 to 64"]),
    (32, 0, ["--pool-min", ">= 1"]),
])
def test_pooling_errors_say_what_works(resolution, pool_min, fragments):
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(WIN_NPZ, resolution=resolution, pool_min=pool_min)
    assert_data_error(excinfo, *fragments)


def test_pool_min_is_unused_without_pooling():
    ds = data.load_dataset(SOMTAMBE_NPZ, resolution=32, pool_min=5)
    assert (ds.pooled_from, ds.pool_min, ds.pool_cache, ds.pooling_note()) == (None, None, None, None)


def test_pooled_cache_file_can_be_given_directly(tmp_path):
    folder = copy_chairs(tmp_path / "train")
    pooled = data.load_dataset(folder, resolution=32)
    direct = data.load_dataset(folder / "tf3dgan_voxels_32.npz")
    assert direct.dim == 32 and direct.names == STEMS and np.array_equal(direct.packed, pooled.packed)


# -------------------------------------------------------------- bad values


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_voxels_are_refused(tmp_path, suffix, bad):
    grids = random_grids(4, 8).astype(np.float32)
    grids[2, 1, 2, :3] = bad
    grids[3] = bad
    path = tmp_path / f"f{suffix}"
    np.save(path, grids) if suffix == ".npy" else np.savez(path, voxels=grids)
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(path)
    assert_data_error(excinfo, path, f"holds {3 + 512} NaN or infinite values of {4 * 512}", "first in grid 2")


def test_one_nan_grid_is_refused(tmp_path):
    np.save(tmp_path / "g.npy", np.full((8, 8, 8), np.nan, np.float16))
    with pytest.raises(DataError) as excinfo:
        data.load_dataset(tmp_path / "g.npy")
    assert_data_error(excinfo, tmp_path / "g.npy", "holds 512 NaN or infinite values of 512;")

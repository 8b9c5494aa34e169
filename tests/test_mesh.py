"""tf3dgan.outputs.mesh and tools/convert_to_obj.py."""
from __future__ import annotations

import errno
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from _cli import FIXTURES, REPO, assert_failed_writes_are_one_line, assert_unwritable_output_is_one_line, error_line, tool

from tf3dgan.data.binvox import read_raw
from tf3dgan.errors import DataError
from tf3dgan.outputs.mesh import EmptyGridError, check_occupied, grid_to_mesh, load_grids

CHAIR = FIXTURES / "chair" / "train" / "chair_0013.raw"
S = 0.01


def box() -> np.ndarray:
    g = np.zeros((8, 10, 9), np.float32)
    g[2:6, 1:8, 3:5] = 0.9
    return g


@pytest.fixture(scope="module")
def chair() -> np.ndarray:
    return read_raw(CHAIR).astype(np.float32)


@pytest.mark.parametrize("which", ["box", "chair"])
def test_closed_meshes(which, chair):
    g = box() if which == "box" else chair
    n = int((g > 0.3).sum())
    f = grid_to_mesh(g, mesh="faces", scale=S)
    assert f.is_watertight and f.is_winding_consistent
    assert f.volume == pytest.approx(n * S**3, rel=1e-9)
    mc = grid_to_mesh(g, mesh="marching-cubes", scale=S)
    assert mc.is_watertight and mc.volume > 0
    assert mc.volume == pytest.approx(n * S**3, rel=0.35)


def test_cubes_and_axes(chair):
    occ = chair > 0.3
    m = grid_to_mesh(chair, mesh="cubes", scale=S)
    pad = np.pad(occ, 1)
    interior = pad[1:-1, 1:-1, 1:-1].copy()
    for ax in range(3):
        for s in (1, -1):
            interior &= np.roll(pad, s, axis=ax)[1:-1, 1:-1, 1:-1]
    cubes = int(occ.sum() - interior.sum())
    assert len(m.faces) == 12 * cubes and len(m.vertices) == 8 * cubes
    idx = np.argwhere(occ)
    lo, hi = idx.min(0), idx.max(0) + 1
    # (x, y, z) = (axis0, axis2, axis1) * scale: z-up
    np.testing.assert_allclose(m.bounds[0], lo[[0, 2, 1]] * S)
    np.testing.assert_allclose(m.bounds[1], hi[[0, 2, 1]] * S)


def test_threshold_matters():
    g = box()
    g[2:6, 1:8, 3] = 0.5
    assert grid_to_mesh(g, mesh="faces", threshold=0.3, scale=1).volume == pytest.approx(4 * 7 * 2)
    assert grid_to_mesh(g, mesh="faces", threshold=0.6, scale=1).volume == pytest.approx(4 * 7)
    with pytest.raises(EmptyGridError) as excinfo:
        grid_to_mesh(g, threshold=0.95, name="x.npy")
    assert str(excinfo.value) == ("x.npy: no voxel above --threshold 0.95 (the grid's largest value is 0.9); "
                                  "give a lower --threshold (below 0.9) to see its voxels")


def test_load_shapes(tmp_path):
    g = box()
    for a in [g, np.stack([g, g]), np.stack([g, g])[:, None], np.stack([g, g])[..., None]]:
        np.save(tmp_path / "a.npy", a)
        got = load_grids(tmp_path / "a.npy")
        assert got.shape[1:] == g.shape and np.array_equal(got[0], g)
    np.save(tmp_path / "b.npy", np.zeros((3, 4)))
    with pytest.raises(DataError, match="b.npy"):
        load_grids(tmp_path / "b.npy")


@pytest.mark.slow
def test_cli_file_and_formats(tmp_path, chair):
    batch = np.stack([chair * 2 - 1, chair * 0.25]).astype(np.float32)
    np.save(tmp_path / "s.npy", batch)      # values in [-1, 1]; grid 1 is all <= 0.25
    p = tool("convert_to_obj", "-f", tmp_path / "s.npy", timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 's.obj'}")
    m = trimesh.load(tmp_path / "s.obj", force="mesh")
    assert len(m.faces) > 1000
    for fmt in ("stl", "ply"):
        p = tool("convert_to_obj", "-f", tmp_path / "s.npy", "--mesh", "faces", "--format", fmt,
                 "-o", tmp_path / f"out.{fmt}", timeout=60)
        assert p.returncode == 0, p.stderr
        m = trimesh.load(tmp_path / f"out.{fmt}", force="mesh")
        assert m.is_watertight and m.volume == pytest.approx((chair > 0.3).sum() * S**3, rel=1e-6)
    p = tool("convert_to_obj", "-f", tmp_path / "s.npy", "--index", "1", timeout=60)
    assert error_line(p) == (f"error: {tmp_path / 's.npy'}[1]: no voxel above --threshold 0.3 (the grid's largest "
                             "value is 0.25); give a lower --threshold (below 0.25) to see its voxels")
    p = tool("convert_to_obj", "-f", tmp_path / "s.npy", "--all", "--threshold", "0.2", "--mesh", "marching-cubes",
             "--smooth", "0.7", timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "s_0.obj").exists() and (tmp_path / "s_1.obj").exists()


def test_cli_run_folder(tmp_path):
    run = tmp_path / "savepoint" / "r"
    run.mkdir(parents=True)
    np.save(run / "10.npy", box())
    np.save(run / "20.npy", box()[::-1] * 0.5)
    p = tool("convert_to_obj", "-n", "r", "--out", tmp_path / "savepoint", timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in (run / "models").iterdir()) == ["10.obj", "20.obj"]
    assert p.stdout.strip().splitlines()[-1] == f"wrote 2 .obj files to {run / 'models'}"
    p = tool("convert_to_obj", "-n", "r", "--out", tmp_path / "savepoint", timeout=60)
    assert p.returncode == 0 and "wrote 0 .obj files" in p.stdout and "skipped 2 existing" in p.stdout


def test_cli_errors(tmp_path):
    assert "no such run folder" in error_line(tool("convert_to_obj", "-n", "nope", "--out", tmp_path))
    assert "nofile.npy: no such file" in error_line(tool("convert_to_obj", "-f", tmp_path / "nofile.npy"))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5, 6)))
    assert "bad.npy: voxel array has shape (2, 3, 4, 5, 6)" in error_line(tool("convert_to_obj", "-f", tmp_path / "bad.npy"))
    np.save(tmp_path / "zero.npy", np.zeros((4, 4, 4)))
    line = error_line(tool("convert_to_obj", "-f", tmp_path / "zero.npy"))
    assert line == f"error: {tmp_path / 'zero.npy'}: no voxel above --threshold 0.3: the grid is empty (every value is 0)"
    (tmp_path / "out.txt").write_text("not voxels")
    assert "out.txt: unknown voxel file type '.txt'" in error_line(tool("convert_to_obj", "-f", tmp_path / "out.txt"))
    assert "--scale must be positive" in error_line(tool("convert_to_obj", "-f", CHAIR, "--scale", "0"))


def test_hand_made_grids():
    one = np.zeros((3, 3, 3), np.float32)
    one[1, 1, 1] = 1
    cubes = grid_to_mesh(one, mesh="cubes", scale=1)
    assert (len(cubes.vertices), len(cubes.faces)) == (8, 12)
    faces = grid_to_mesh(one, mesh="faces", scale=1)
    assert (len(faces.vertices), len(faces.faces)) == (8, 12) and faces.is_watertight
    assert faces.volume == pytest.approx(1.0)
    block = np.zeros((4, 4, 4), np.float32)
    block[1:3, 1:3, 1:3] = 1
    f = grid_to_mesh(block, mesh="faces", scale=1)
    # 6 sides of 2×2 unit squares; the vertices are the 3×3×3 lattice without its centre
    assert (len(f.vertices), len(f.faces)) == (26, 48) and f.is_watertight and f.volume == pytest.approx(8.0)
    mc = grid_to_mesh(block, mesh="marching-cubes", scale=1)
    assert mc.is_watertight and mc.is_winding_consistent and mc.volume > 0
    assert len(grid_to_mesh(block, mesh="cubes", scale=1).faces) == 8 * 12   # every voxel of it is exposed


# ------------------------------------------------------------------ empty grids, datasets, outputs


def test_check_occupied_says_the_threshold_and_the_largest_value():
    g = np.zeros((4, 4, 4), np.float32)
    assert check_occupied(np.pad(np.ones((1, 1, 1)), 1), 0.3, "a").sum() == 1
    with pytest.raises(EmptyGridError, match=r"^z: no voxel above --threshold 0.3: the grid is empty \(every value is 0\)$"):
        check_occupied(g, 0.3, "z")
    g[1, 2, 3] = -0.5
    g[0, 0, 0] = 0.1
    with pytest.raises(EmptyGridError) as excinfo:
        check_occupied(g, 0.3, "s.npy[4]")
    assert str(excinfo.value) == ("s.npy[4]: no voxel above --threshold 0.3 (the grid's largest value is 0.1); "
                                  "give a lower --threshold (below 0.1) to see its voxels")
    with pytest.raises(EmptyGridError, match="no finite value"):
        check_occupied(np.full((2, 2, 2), np.nan), 0.3, "n")
    assert issubclass(EmptyGridError, DataError)


def test_nan_samples_are_refused(tmp_path):
    g = np.full((2, 8, 8, 8), 0.9, np.float32)
    g[1, :2] = np.nan
    np.save(tmp_path / "nan.npy", g)
    with pytest.raises(DataError, match="holds 128 NaN or infinite values of 1024 \\(the first in grid 1 of 2\\)"):
        load_grids(tmp_path / "nan.npy")
    line = error_line(tool("convert_to_obj", "-f", tmp_path / "nan.npy"))
    assert "nan.npy: voxel array holds 128 NaN or infinite values" in line


WIN_NPZ = FIXTURES / "modelnet10_chair_64_win_small.npz"


@pytest.mark.slow
def test_cli_dataset_sources(tmp_path):
    from tf3dgan.data import datasets as data

    test_split = data.load_dataset(f"{WIN_NPZ}:test")
    p = tool("convert_to_obj", "-f", f"{WIN_NPZ}:test", "--index", "2", "--mesh", "faces", "-o", tmp_path / "c.ply",
             timeout=60)
    assert p.returncode == 0, p.stderr
    m = trimesh.load(tmp_path / "c.ply", force="mesh", process=False)   # (STL would merge kept-apart vertices)
    assert m.is_watertight and m.volume == pytest.approx(test_split.grids(2).sum() * S**3, rel=1e-6)
    # a folder of .raw files (and its default output beside it), --index from the end
    folder = tmp_path / "train"
    folder.mkdir()
    for stem in ("chair_0013", "chair_0037"):
        shutil.copy(FIXTURES / "chair" / "train" / f"{stem}.raw", folder)
    p = tool("convert_to_obj", "-f", folder, "--index", "-1", "--mesh", "faces", timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"wrote {tmp_path / 'train.obj'}")
    m = trimesh.load(tmp_path / "train.obj", force="mesh")
    assert m.volume == pytest.approx(read_raw(folder / "chair_0037.raw").sum() * S**3, rel=1e-6)
    assert "--index 2 is out of range (it holds 2 grids)" in error_line(tool("convert_to_obj", "-f", folder, "--index", "2"))
    # the dataset cache, synthetic shapes, --all
    data.write_cache(folder, data.load_dataset(folder))
    p = tool("convert_to_obj", "-f", folder / data.CACHE_NAME, "--all", "-o", tmp_path / "out" / "cached", timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["cached_0.obj", "cached_1.obj"]
    p = tool("convert_to_obj", "-f", "synthetic:boxes:n=2:res=8", "--all", "-o", tmp_path / "box.ply", timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "box_0.ply").exists() and (tmp_path / "box_1.ply").exists()
    assert "nokey" in error_line(tool("convert_to_obj", "-f", f"{WIN_NPZ}:nokey"))
    assert "ghost.npz: no such file or folder" in error_line(tool("convert_to_obj", "-f", tmp_path / "ghost.npz:train"))


def test_cli_all_skips_and_counts_empty_grids(tmp_path, chair):
    np.save(tmp_path / "s.npy", np.stack([chair, np.zeros_like(chair), chair * 0.2]))
    p = tool("convert_to_obj", "-f", tmp_path / "s.npy", "--all", timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.glob("*.obj")) == ["s_0.obj"]
    assert p.stdout.splitlines()[-1] == ("2 of the 3 grids are empty (grids 1, 2: no voxel above --threshold 0.3); "
                                         "a lower --threshold may show them; not written")
    np.save(tmp_path / "z.npy", np.zeros((2, 4, 4, 4)))
    assert "none of its 2 grids has a voxel above --threshold 0.3" in error_line(
        tool("convert_to_obj", "-f", tmp_path / "z.npy", "--all"))


def test_cli_unwritable_output_is_one_line(tmp_path, chair):
    assert_unwritable_output_is_one_line(tmp_path, "convert_to_obj", CHAIR, ".obj")


@pytest.mark.parametrize("code, words", [(errno.EROFS, "choose a writable location"), (errno.ENOSPC, "free some space")])
def test_read_only_or_full_disk_is_one_line_in_process(tmp_path, monkeypatch, capsys, code, words):
    from tools import convert_to_obj

    target = tmp_path / "c.obj"
    assert_failed_writes_are_one_line(monkeypatch, capsys, convert_to_obj.main, ["-f", str(CHAIR), "-o", str(target)],
                                      target, code, words)
    assert not list(tmp_path.iterdir())


def imported_modules(*args) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    return {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["-f", "nope.npy"], ["-f", str(CHAIR), "--scale", "-1"]])
def test_help_and_bad_flags_import_no_heavy_modules(args):
    heavy = {"tensorflow", "keras", "jax", "torch", "trimesh", "scipy", "skimage", "matplotlib"}
    assert not imported_modules(REPO / "tools" / "convert_to_obj.py", *args) & heavy


def test_convert_to_meshes_called_directly(tmp_path, chair):
    """tf3dgan.outputs.meshes.convert_to_meshes (what tools/convert_to_obj.py calls) on the fixture chairs: a source's
    grids and a run's samples become closed meshes of the chair's volume; what it returns names what it wrote."""
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.outputs.meshes import convert_to_meshes

    one = convert_to_meshes(file=CHAIR, output=tmp_path / "c.stl", mesh="faces")
    assert one.paths == [tmp_path / "c.stl"] and one.format == "stl" and one.threshold == 0.3
    m = trimesh.load(tmp_path / "c.stl", force="mesh")
    assert m.is_watertight and m.volume == pytest.approx(chair.sum() * S**3, rel=1e-6)
    assert (len(m.vertices), len(m.faces)) == one.written[0][1:3]
    assert one.summary().startswith(f"wrote {tmp_path / 'c.stl'} ({one.written[0][1]} vertices, ")
    np.save(tmp_path / "b.npy", np.stack([chair, np.zeros_like(chair), chair]))
    every = convert_to_meshes(file=tmp_path / "b.npy", every=True, fmt="ply")
    assert every.paths == [tmp_path / "b_0.ply", tmp_path / "b_2.ply"] and every.empty == [1]
    assert every.summary().splitlines()[-1].endswith("; not written")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    np.save(run / "10.npy", chair[None])
    np.save(run / "20.npy", np.zeros((1, 8, 8, 8), np.float32))
    heard = []
    done = convert_to_meshes("r", out=tmp_path / "runs", report=heard.append)
    assert done.paths == [run / "models" / "10.obj"] and done.empty == [run / "20.npy"]
    assert heard == [f"skipped {run / '20.npy'}: {run / '20.npy'}: no voxel above --threshold 0.3: the grid is empty "
                     "(every value is 0)"]
    assert len(trimesh.load(run / "models" / "10.obj", force="mesh").faces) > 1000
    again = convert_to_meshes("r", out=tmp_path / "runs")
    assert again.written == [] and again.existing == 1
    with pytest.raises(Tf3dganError, match="--scale must be positive"):
        convert_to_meshes(file=CHAIR, scale=0)
    with pytest.raises(Tf3dganError, match="go with -f/--file"):
        convert_to_meshes("r", out=tmp_path / "runs", every=True)
    with pytest.raises(DataError, match="none of its 1 grids"):
        convert_to_meshes(file=run / "20.npy", every=True)

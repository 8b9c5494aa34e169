"""tf3dgan.mesh and tools/convert_to_obj.py."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from tf3dgan.binvox import read_raw
from tf3dgan.errors import DataError
from tf3dgan.mesh import grid_to_mesh, load_grids

from _cli import FIXTURES, error_line, tool

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
    with pytest.raises(DataError, match="no voxel above threshold 0.95 in x.npy"):
        grid_to_mesh(g, threshold=0.95, name="x.npy")


def test_load_shapes(tmp_path):
    g = box()
    for a in [g, np.stack([g, g]), np.stack([g, g])[:, None], np.stack([g, g])[..., None]]:
        np.save(tmp_path / "a.npy", a)
        got = load_grids(tmp_path / "a.npy")
        assert got.shape[1:] == g.shape and np.array_equal(got[0], g)
    np.save(tmp_path / "b.npy", np.zeros((3, 4)))
    with pytest.raises(DataError, match="b.npy"):
        load_grids(tmp_path / "b.npy")


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
    assert "no voxel above threshold 0.3 in" in error_line(p) and "s.npy[1]" in error_line(p)
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
    assert line == f"error: no voxel above threshold 0.3 in {tmp_path / 'zero.npy'}"


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

"""The built-in binvox voxelizer (tf3dgan.data.voxelize) and tools/convert_data.py, check_voxelizer.py."""
from __future__ import annotations

import filecmp
import importlib.util
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from _cli import FIXTURES, error_line, tool

from tf3dgan.data import binvox
from tf3dgan.data import datasets as data
from tf3dgan.data import voxelize as V
from tf3dgan.errors import DataError, Tf3dganError

MESHES = FIXTURES / "meshes"
MODELNET = MESHES / "ModelNet10"
STEMS = ["chair_0948", "desk_0011", "monitor_0249", "monitor_0485", "table_0151"]


def fixture_meshes() -> list[Path]:
    return V.find_meshes(MODELNET)


def box_mesh(lo=(5.0, -3.0, 7.0), size=(4.0, 2.0, 1.0)) -> V.Mesh:
    """A closed axis-aligned box (12 triangles)."""
    lo, size = np.asarray(lo), np.asarray(size)
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)
    verts = lo + corners * size
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [(a, b, c) for q in quads for (a, b, c) in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))]
    return V.Mesh(verts, np.array(faces))


def write_off(path: Path, mesh: V.Mesh) -> Path:
    lines = ["OFF", f"{len(mesh.vertices)} {len(mesh.faces)} 0"]
    lines += [" ".join(f"{c:.9g}" for c in v) for v in mesh.vertices]
    lines += ["3 " + " ".join(map(str, f)) for f in mesh.faces]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ accuracy


def _reference(mesh: Path, tag: str) -> Path | None:
    ref = mesh.with_name(mesh.stem + tag)
    return ref if ref.exists() else None


def _read(path: Path) -> np.ndarray:
    return binvox.read_raw(path) if path.suffix == ".raw" else binvox.read_binvox(path)


@pytest.mark.parametrize("method,tags,dim,center,mean_min,each_min", [
    ("binvox-win", [".win126.raw"], 64, False, 0.995, 0.99),
    ("binvox", [".raw", ".binvox"], 64, False, 0.99, 0.98),
    ("surface", [".d32_e_cb.binvox"], 32, True, 0.98, 0.98),
])
def test_accuracy_against_binvox_references(method, tags, dim, center, mean_min, each_min):
    ious = {}
    for mesh_path in fixture_meshes():
        mesh = V.read_mesh(mesh_path)
        for tag in tags:
            ref = _reference(mesh_path, tag)
            if ref is not None:
                expected = _read(ref)
                assert expected.shape == (dim,) * 3
                grid = V.voxelize_mesh(mesh, dim, method, center)
                assert grid.dtype == np.uint8 and grid.shape == (dim,) * 3 and set(np.unique(grid)) <= {0, 1}
                ious[f"{mesh_path.stem}{tag}"] = V.iou(grid, expected)
    assert len(ious) >= 3, ious
    assert np.mean(list(ious.values())) >= mean_min, ious
    assert min(ious.values()) >= each_min, ious
    assert sum(v == 1.0 for v in ious.values()) >= 2, ious  # most small meshes match bit for bit


def test_binvox_output_is_byte_identical(tmp_path):
    mesh = MODELNET / "chair" / "test" / "chair_0948.off"
    grid, place = V.voxelize_file(mesh, 64, "binvox")
    V.write_grid(tmp_path / "a.binvox", grid, place)
    assert filecmp.cmp(tmp_path / "a.binvox", mesh.with_suffix(".binvox"), shallow=False)
    table = MODELNET / "table" / "train" / "table_0151.off"
    grid, place = V.voxelize_file(table, 32, "surface", center=True)
    V.write_grid(tmp_path / "b.binvox", grid, place)
    assert filecmp.cmp(tmp_path / "b.binvox", table.with_name("table_0151.d32_e_cb.binvox"), shallow=False)


# ----------------------------------------------------------------- placement


@pytest.mark.parametrize("method", ["binvox", "binvox-win"])
def test_box_placement_bbox_min_at_origin(method):
    grid = V.voxelize_mesh(box_mesh(), 16, method)  # order [x][z][y]; box 4 x 2 x 1 -> 16 x 8 x 4 cells
    expected = np.zeros((16, 16, 16), np.uint8)
    expected[:, 0:4, 0:8] = 1
    np.testing.assert_array_equal(grid, expected)


def test_box_placement_centered():
    grid = V.voxelize_mesh(box_mesh(), 16, "binvox", center=True)
    expected = np.zeros((16, 16, 16), np.uint8)
    expected[:, 6:10, 4:12] = 1  # z: (16 - 4) / 2 = 6, y: (16 - 8) / 2 = 4
    np.testing.assert_array_equal(grid, expected)
    place = V.placement(box_mesh(), 16, center=True)
    np.testing.assert_allclose(place.offset, [0, 4, 6])
    assert place.binvox_header() == ((5.0, -3.0, 7.0), 4.0)  # binvox writes the bbox min, also with -cb


def test_box_surface_is_a_hollow_shell():
    solid = V.voxelize_mesh(box_mesh(size=(4, 4, 4)), 16, "binvox")
    shell = V.voxelize_mesh(box_mesh(size=(4, 4, 4)), 16, "surface")
    assert solid.all()
    assert shell[0].all() and shell[15].all() and shell[:, 0].all() and shell[:, :, 0].all()
    assert not shell[2:14, 2:14, 2:14].any()


def test_unused_vertices_count_in_the_bounding_box():
    mesh = box_mesh(lo=(0, 0, 0), size=(1, 1, 1))
    far = V.Mesh(np.vstack([mesh.vertices, [[2.0, 0.0, 0.0]]]), mesh.faces)  # as binvox: all vertices
    grid = V.voxelize_mesh(far, 16, "binvox")
    assert grid[:8, :8, :8].all() and grid.sum() == 8**3


def test_raw_layout(tmp_path):
    mesh = box_mesh(lo=(0, 0, 0), size=(4, 2, 1))  # x longest, then y, then z
    grid = V.voxelize_mesh(mesh, 8, "binvox")
    out = tmp_path / "box.raw"
    V.write_grid(out, grid)
    raw = out.read_bytes()
    assert len(raw) == 8**3 and set(raw) == {0, 255}
    cube = np.frombuffer(raw, np.uint8).reshape(8, 8, 8)  # [x][z][y], y fastest
    assert (cube[:, :2, :4] == 255).all() and not cube[:, 2:].any() and not cube[:, :, 4:].any()
    # the first 4 bytes are y = 0..3 of x = 0, z = 0
    assert raw[:8] == bytes([255] * 4 + [0] * 4)


# ----------------------------------------------------------------- OFF parsing


TRI = b"0 0 0\n1 0 0\n0 1 0\n0 0 1\n"


def test_off_quirks():
    glued = V.parse_off(b"OFF4 2 0\n" + TRI + b"3 0 1 2\n3 0 1 3\n")
    assert glued.faces.tolist() == [[0, 1, 2], [0, 1, 3]]
    messy = V.parse_off(b"# made by hand\r\nOFF\r\n\r\n 4  1   0 # counts\r\n" + TRI.replace(b"\n", b"  \r\n")
                        + b"\r\n4 0 1 2 3 255 0 0\r\n")
    assert messy.vertices.shape == (4, 3) and messy.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    pentagon = V.parse_off(b"OFF 5 1 0\n" + TRI + b"1 1 1\n5 0 1 2 3 4\n")
    assert pentagon.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]
    colours = V.parse_off(b"OFF\n4 1 0\n0 0 0 1 1 1\n1 0 0 1 1 1\n0 1 0 1 1 1\n0 0 1 1 1 1\n3 0 1 2\n")
    np.testing.assert_array_equal(colours.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize("text,reason", [
    (b"OFF\n4 2 0\n" + TRI + b"3 0 1 2\n", "truncated"),
    (b"OFF\n4 1 0\n" + TRI + b"3 0 1 7\n", "index 7"),
    (b"OFF\n4 1 0\n0 0 0\n1 0 0\n0 nan 0\n0 0 1\n3 0 1 2\n", "non-finite"),
    (b"OFF\n4 0 0\n" + TRI, "faces"),
    (b"OFF\n3 1 0\n1 1 1\n1 1 1\n1 1 1\n3 0 1 2\n", "degenerate"),
    (b"OFF\n4 1 0\n0 0 0\n1 x 0\n0 1 0\n0 0 1\n3 0 1 2\n", "bad number"),
    (b"OFF\nfour 1 0\n" + TRI + b"3 0 1 2\n", "counts"),
    (b"PLY\n4 1 0\n" + TRI + b"3 0 1 2\n", "not an OFF"),
    (b"OFF\n4 1 0\n" + TRI + b"2 0 1\n", "face line"),
    (b"", "empty"),
])
def test_off_errors_name_the_file(tmp_path, text, reason):
    path = tmp_path / "broken_mesh.off"
    path.write_bytes(text)
    with pytest.raises(DataError) as excinfo:
        V.read_mesh(path)
    message = str(excinfo.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_other_formats_need_trimesh_or_work(tmp_path):
    path = tmp_path / "m.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    if importlib.util.find_spec("trimesh") is None:
        with pytest.raises(DataError, match="trimesh"):
            V.read_mesh(path)
    else:
        assert V.read_mesh(path).faces.shape == (4, 3)


# ---------------------------------------------------------------- convert tool


def copy_meshes(dest: Path) -> Path:
    """Copy only the fixture meshes (not the references) to ``dest``, same tree."""
    for mesh in fixture_meshes():
        target = dest / mesh.relative_to(MESHES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mesh, target)
    return dest


def summary_line(proc) -> str:
    return [line for line in proc.stdout.splitlines() if line.startswith("converted ")][-1]


def test_convert_tool_raw_cache_skip_force(tmp_path):
    root = copy_meshes(tmp_path / "models")
    proc = tool("convert_data", "-m", root, "-j", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert summary_line(proc).startswith("converted 5, skipped 0, failed 0")
    for mesh in V.find_meshes(root):
        out = mesh.with_suffix(".raw")
        assert out.stat().st_size == 64**3
        ref = _reference(MESHES / mesh.relative_to(root), ".win126.raw")
        if ref is not None and mesh.stem == "monitor_0249":
            assert filecmp.cmp(out, ref, shallow=False)  # bit-exact with Windows binvox for this mesh
    # one cache per folder of meshes, read by the training loader
    folders = sorted({m.parent for m in V.find_meshes(root)})
    assert len(folders) == 5
    for folder in folders:
        cache = folder / data.CACHE_NAME
        stems = sorted(p.stem for p in folder.glob("*.raw"))
        with np.load(cache) as z:
            assert sorted(z["names"].tolist()) == stems and int(z["dim"]) == 64
            assert str(z["method"]) == "binvox-win"
            cached = z["voxels"]
        loaded = data.load_dataset(folder)
        assert loaded.names == stems
        np.testing.assert_array_equal(loaded.packed, cached)
        np.testing.assert_array_equal(loaded.grids(0)[0], binvox.read_raw(folder / f"{stems[0]}.raw"))
    assert not [p for p in root.rglob(".*")]  # no temporary files left
    again = tool("convert_data", "-m", root, "-j", "1", "--no-progress")
    assert again.returncode == 0 and summary_line(again).startswith("converted 0, skipped 5, failed 0")
    forced = tool("convert_data", "-m", root, "-j", "1", "--force", "--method", "binvox", "--no-progress")
    assert forced.returncode == 0 and summary_line(forced).startswith("converted 5, skipped 0, failed 0")
    monitor = root / "ModelNet10" / "monitor" / "train"
    assert V.iou(binvox.read_raw(monitor / "monitor_0249.raw"),
                 binvox.read_raw(MODELNET / "monitor/train/monitor_0249.raw")) > 0.98
    with np.load(monitor / data.CACHE_NAME) as z:
        assert str(z["method"]) == "binvox"


def test_convert_tool_broken_file_goes_on(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copyfile(MODELNET / "table" / "train" / "table_0151.off", root / "table_0151.off")
    shutil.copyfile(MODELNET / "chair" / "test" / "chair_0948.off", root / "chair_0948.off")
    (root / "broken_0001.off").write_bytes(b"OFF\n4 1 0\n" + TRI + b"3 0 1 9\n")
    proc = tool("convert_data", "-m", root, "-j", "1", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "broken_0001.off" in out and "index 9" in out and "Traceback" not in out
    assert summary_line(proc).startswith("converted 2, skipped 0, failed 1")
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted(["broken_0001.off", "chair_0948.off", "chair_0948.raw", "table_0151.off", "table_0151.raw",
                            data.CACHE_NAME])
    assert data.load_dataset(root).names == ["chair_0948", "table_0151"]


@pytest.mark.parametrize("fmt", ["binvox", "npy"])
def test_convert_tool_formats(tmp_path, fmt):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copyfile(MODELNET / "desk" / "train" / "desk_0011.off", root / "desk_0011.off")
    proc = tool("convert_data", "-m", root, "--format", fmt, "--dim", "32", "--method", "surface", "--center",
                "-j", "1", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = root / f"desk_0011.{fmt}"
    grid = binvox.read_binvox(out) if fmt == "binvox" else np.load(out)
    expected = V.voxelize_file(root / "desk_0011.off", 32, "surface", center=True)[0]
    np.testing.assert_array_equal(grid, expected)
    assert data.load_dataset(root).names == ["desk_0011"]


def test_convert_tool_errors(tmp_path):
    proc = tool("convert_data", "-m", tmp_path / "nope", "--no-progress")
    assert proc.returncode == 2 and "nope" in proc.stderr and "does not exist" in proc.stderr
    proc = tool("convert_data", "-m", tmp_path, "--no-progress")
    assert proc.returncode == 2 and "no mesh files" in proc.stderr


FAKE_BINVOX = """#!{python}
import os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_BINVOX_LOG"], "a") as log:
    log.write(repr(args) + "\\n")
mesh = args[-1]
if "slow" in os.path.basename(mesh):
    with open(mesh[:-4] + ".raw", "wb") as f:
        f.write(b"\\xff" * 10)  # a partial file, then hang
        f.flush()
        time.sleep(30)
d = int(args[args.index("-d") + 1])
with open(mesh[:-4] + ".raw", "wb") as f:
    f.write(bytes([255]) * d + bytes(d**3 - d))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the fake binvox is a shebang script")
def test_external_binvox_binary(tmp_path, monkeypatch):
    fake = tmp_path / "binvox"
    fake.write_text(FAKE_BINVOX.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_BINVOX_LOG", str(log))
    root = tmp_path / "m"
    root.mkdir()
    shutil.copyfile(MODELNET / "table" / "train" / "table_0151.off", root / "table_0151.off")
    shutil.copyfile(MODELNET / "table" / "train" / "table_0151.off", root / "slow_0001.off")
    proc = tool("convert_data", "-m", root, "-b", fake, "--timeout", "2", "-j", "1", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    calls = [eval(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2
    for call in calls:
        assert call[:4] == ["-d", "64", "-t", "raw"] and len(call) == 5 and call[4].endswith(".off")
    out = binvox.read_raw(root / "table_0151.raw")
    assert out.reshape(-1)[:64].all() and out.sum() == 64
    assert "slow_0001.off" in proc.stdout + proc.stderr and "did not finish" in proc.stdout + proc.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted(["slow_0001.off", "table_0151.off", "table_0151.raw",
                                                             data.CACHE_NAME])


# -------------------------------------------------------------- check tool


def test_check_voxelizer_tool():
    proc = tool("check_voxelizer", MESHES, MESHES, "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    assert "binvox-win --dim 64  vs  X.win126.raw" in table
    assert "surface --center --dim 32  vs  X.d32_e_cb.binvox" in table
    rows = [line.split() for line in table.splitlines() if "  vs  " in line and not line[0].isdigit()]
    assert len(rows) == 4
    for row in rows:
        files, mean = int(row[-5]), float(row[-4])
        assert files >= 1 and mean >= 0.98


def test_check_voxelizer_no_references(tmp_path):
    proc = tool("check_voxelizer", tmp_path, MESHES)
    assert proc.returncode == 2 and "no mesh" in proc.stderr


def test_check_voxelizer_library_reports_unreadable_meshes(tmp_path):
    from tf3dgan.data.voxel_check import check_voxelizer, format_table

    src = MODELNET / "table" / "train"
    for name in ("table_0151.off", "table_0151.binvox"):
        shutil.copyfile(src / name, tmp_path / name)
    (tmp_path / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")   # 3 vertices announced, 2 given
    shutil.copyfile(src / "table_0151.binvox", tmp_path / "broken.binvox")
    seen = []
    result = check_voxelizer(tmp_path, tmp_path, on_file=lambda value, key, rel: seen.append((key, str(rel))))
    assert seen == [("binvox --dim 64  vs  X.binvox", "table_0151")]
    (value, rel), = result.rows["binvox --dim 64  vs  X.binvox"]
    assert rel == "table_0151" and value >= 0.98
    assert len(result.failures) == 1 and "broken.off" in result.failures[0]   # one line, not skipped silently
    assert "table_0151" in format_table(result.rows).splitlines()[1]
    (tmp_path / "table_0151.off").unlink()            # only the unreadable mesh has a reference now
    with pytest.raises(Tf3dganError, match=r"none of the 1 mesh file\(s\) with references .*broken\.off"):
        check_voxelizer(tmp_path, tmp_path)


def test_convert_tree_cache_method_note(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copyfile(MODELNET / "table" / "train" / "table_0151.off", root / "table_0151.off")
    lines = []
    summary = V.convert_tree(root, V.ConvertOptions(dim=16, method="binvox"), jobs=1, progress=False,
                             report=lines.append)
    assert summary.count("converted") == 1 and summary.caches == [root / data.CACHE_NAME] and not lines

    def note():
        with np.load(root / data.CACHE_NAME) as z:
            return str(z["method"]) if "method" in z.files else None

    assert note() == "binvox"
    # the same options again: skipped, cache and note kept
    summary = V.convert_tree(root, V.ConvertOptions(dim=16, method="binvox"), jobs=1, progress=False)
    assert summary.count("skipped") == 1 and summary.caches == [] and summary.skipped_sides == (16,)
    # another method: refused up front, nothing touched (was: a silent skip)
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    refused = r"1 of 1 existing voxel output differs .*made with binvox .*not surface.*--force"
    with pytest.raises(DataError, match=refused):
        V.convert_tree(root, V.ConvertOptions(dim=16, method="surface"), jobs=1, progress=False)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    # a new mesh made the same way: converted, the note stays
    shutil.copyfile(MODELNET / "chair" / "test" / "chair_0948.off", root / "chair_0948.off")
    summary = V.convert_tree(root, V.ConvertOptions(dim=16, method="binvox"), jobs=1, progress=False)
    assert summary.count("converted") == 1 and summary.count("skipped") == 1 and note() == "binvox"
    # --force with another method: everything reconverted, the note follows
    summary = V.convert_tree(root, V.ConvertOptions(dim=16, method="surface", force=True), jobs=1, progress=False)
    assert summary.count("converted") == 2 and note() == "surface"
    assert data.load_dataset(root).names == ["chair_0948", "table_0151"]
    # an unreadable voxel file in the folder: no cache, one warning line, the batch still succeeds
    (root / "odd.npy").write_bytes(b"not a numpy file")
    summary = V.convert_tree(root, V.ConvertOptions(dim=16, method="surface", force=True), jobs=1, progress=False,
                             report=lines.append)
    assert summary.count("converted") == 2 and len(lines) == 1 and "not written" in lines[0]


# --------------------------------------------- existing outputs of another size


def _tree_bytes(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_tool_other_dim_is_refused_then_forced(tmp_path):
    """The newcomer's case: a folder converted at 64³, then --dim 32: not a silent skip."""
    root = copy_meshes(tmp_path / "models")
    first = tool("convert_data", "-m", root, "-j", "1", "--no-progress")
    assert first.returncode == 0 and summary_line(first).startswith("converted 5, skipped 0, failed 0")
    before = _tree_bytes(root)
    proc = tool("convert_data", "-m", root, "--dim", "32", "-j", "1", "--no-progress")
    line = error_line(proc)
    assert "5 of 5 existing voxel outputs differ" in line and "5 are 64³, not 32³" in line
    assert "nothing was converted" in line and "--force" in line
    assert "tools/train.py --resolution 32" in line and "pools them down" in line
    assert not [line for line in proc.stdout.splitlines() if line.startswith("converted ")]
    assert _tree_bytes(root) == before                       # nothing written, caches untouched
    # what the error says works: the 64³ folder loads pooled to 32³ ...
    pooled = data.load_dataset(root, resolution=32)
    assert pooled.dim == 32 and len(pooled) == 5
    # ... and --force replaces every output (and cache) with 32³ ones: never a mixed folder
    forced = tool("convert_data", "-m", root, "--dim", "32", "--force", "-j", "1", "--no-progress")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert summary_line(forced).startswith("converted 5, skipped 0, failed 0")
    for mesh in V.find_meshes(root):
        assert mesh.with_suffix(".raw").stat().st_size == 32**3
        with np.load(mesh.parent / data.CACHE_NAME) as z:
            assert int(z["dim"]) == 32 and str(z["method"]) == "binvox-win"
    loaded = data.load_dataset(root)
    assert loaded.dim == 32 and len(loaded) == 5
    # the same flags again: skipped, and the summary says why
    again = tool("convert_data", "-m", root, "--dim", "32", "-j", "1", "--no-progress")
    assert again.returncode == 0
    assert summary_line(again).startswith("converted 0, skipped 5, failed 0")
    assert "their 32³ outputs exist (--force reconverts them)" in summary_line(again)


def test_convert_tool_other_method_is_refused(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copyfile(MODELNET / "table" / "train" / "table_0151.off", root / "table_0151.off")
    assert tool("convert_data", "-m", root, "-j", "1", "--no-progress").returncode == 0
    before = _tree_bytes(root)
    line = error_line(tool("convert_data", "-m", root, "--method", "binvox", "-j", "1", "--no-progress"))
    assert "1 of 1 existing voxel output differs" in line and "made with binvox-win" in line
    assert "not binvox;" in line and "--force" in line and "train.py" not in line
    assert _tree_bytes(root) == before


def test_convert_tool_never_leaves_mixed_sizes(tmp_path):
    """Grids this run would not replace (another --format) and that have another size: refused,
    with --force too, since --force only replaces this run's outputs."""
    root = tmp_path / "m"
    root.mkdir()
    shutil.copyfile(MODELNET / "desk" / "train" / "desk_0011.off", root / "desk_0011.off")
    assert tool("convert_data", "-m", root, "-j", "1", "--no-progress").returncode == 0   # desk_0011.raw, 64³
    before = _tree_bytes(root)
    for extra in ([], ["--force"]):
        line = error_line(tool("convert_data", "-m", root, "--dim", "32", "--format", "npy", *extra,
                               "-j", "1", "--no-progress"))
        assert "1 other voxel file in the folders of the meshes holds 64³ grids" in line and "desk_0011.raw" in line
        assert "mix" in line and "--format raw" in line and "nothing was converted" in line
        assert _tree_bytes(root) == before
    # a library caller of convert_file is not silently skipped either
    result = V.convert_file(root / "desk_0011.off", V.ConvertOptions(dim=32))
    assert result.status == "failed" and "64³ grid, not 32³" in result.message and "--force" in result.message
    assert _tree_bytes(root) == before


def test_folder_named_like_a_mesh_is_reported(tmp_path):
    root = tmp_path / "m"
    (root / "x.off").mkdir(parents=True)
    shutil.copyfile(MODELNET / "table" / "train" / "table_0151.off", root / "x.off" / "table_0151.off")
    shutil.copyfile(MODELNET / "chair" / "test" / "chair_0948.off", root / "chair_0948.off")
    lines = []
    assert V.find_meshes(root, report=lines.append) == [root / "chair_0948.off", root / "x.off" / "table_0151.off"]
    assert lines == [f"warning: {root / 'x.off'} is a folder, not a mesh file: not voxelized (meshes inside it are)"]
    proc = tool("convert_data", "-m", root, "-j", "1", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[0] in proc.stdout.splitlines()
    line = summary_line(proc)
    assert line.startswith("converted 2, skipped 0, failed 0")
    assert "1 entry named like a mesh is not a mesh file" in line
    # only folders named like meshes: the error says so
    empty = tmp_path / "e"
    (empty / "y.obj").mkdir(parents=True)
    line = error_line(tool("convert_data", "-m", empty, "--no-progress"))
    assert "no mesh files" in line and "1 entry named like one is not a file" in line
    # check_voxelizer reports it too
    from tf3dgan.data.voxel_check import check_voxelizer

    result = check_voxelizer(root, root, methods=["binvox"])   # the .raw files just written are references
    assert result.warnings == (lines[0],) and len(result.rows["binvox --dim 64  vs  X.raw"]) == 2


# ------------------------------------------------------------ binvox -e rules


def test_surface_matches_binvox_e_bit_for_bit():
    """binvox -d 32 -e -cb references of the fixture meshes are reproduced exactly."""
    refs = 0
    for mesh_path in fixture_meshes():
        ref = _reference(mesh_path, ".d32_e_cb.binvox")
        if ref is not None:
            refs += 1
            np.testing.assert_array_equal(V.voxelize_file(mesh_path, 32, "surface", center=True)[0], _read(ref),
                                          err_msg=mesh_path.stem)
    assert refs == 5


def _one_triangle(corners) -> V.Mesh:
    """One triangle plus two unused vertices that pin the bounding box to [0, 8]^3 (scale 1 at dim 8)."""
    return V.Mesh(np.vstack([corners, [[0, 0, 0], [8, 8, 8]]]).astype(float), np.array([[0, 1, 2]]))


def test_surface_cells_are_half_open_and_clamped():
    # a triangle in the plane x = 3 is tried for cell x = 3 only, not for x = 2 (whose box it touches)
    grid = V.voxelize_mesh(_one_triangle([[3, 1, 1], [3, 6, 1], [3, 1, 6]]), 8, "surface")  # [x][z][y]
    assert set(np.argwhere(grid)[:, 0].tolist()) == {3}
    # one on the grid's far face x = 8 goes to the last cell
    grid = V.voxelize_mesh(_one_triangle([[8, 1, 1], [8, 6, 1], [8, 1, 6]]), 8, "surface")
    assert set(np.argwhere(grid)[:, 0].tolist()) == {7}


@pytest.mark.parametrize("s,hit", [(3.0, True), (3.02, True), (3.04, False)])
def test_surface_box_half_side_is_binvox_0_51(s, hit):
    """Plane x + y + z = s: its SAT distance from cell (0, 0, 0) is (s - 1.5) / 3 half sides; binvox
    -e sets the cell up to 0.51 (s <= 3.03), not just up to 0.5 (s <= 3)."""
    grid = V.voxelize_mesh(_one_triangle([[s, 0, 0], [0, s, 0], [0, 0, s]]), 8, "surface")
    assert bool(grid[0, 0, 0]) is hit
    assert grid[1, 0, 0] and grid[0, 1, 0] and grid[0, 0, 1]

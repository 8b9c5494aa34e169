"""tf3dgan.outputs.plots' voxel pictures (scatter and shaded) and tools/convert_to_graph.py."""
from __future__ import annotations

import errno
import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
from _cli import FIXTURES, REPO, assert_failed_writes_are_one_line, assert_unwritable_output_is_one_line, error_line, tool

from tf3dgan.data.binvox import read_binvox, read_raw
from tf3dgan.outputs import plots

CHAIR = FIXTURES / "chair" / "train" / "chair_0013.raw"
MONITOR = FIXTURES / "meshes" / "ModelNet10" / "monitor" / "train" / "monitor_0249.binvox"
WIN_NPZ = FIXTURES / "modelnet10_chair_64_win_small.npz"
SHARED_CHAIRS = REPO.parent / "shared" / "data" / "voxels" / "modelnet10_chair_64_win.npz"


@pytest.fixture(scope="module")
def chair() -> np.ndarray:
    return read_raw(CHAIR).astype(np.float32)


@pytest.fixture(scope="module")
def monitor() -> np.ndarray:
    return read_binvox(MONITOR).astype(np.float32)


def opaque(image: np.ndarray) -> np.ndarray:
    return image[..., 3] > 0.5


def test_render_empty_grid_is_transparent():
    image = plots.render_voxels(np.zeros((8, 8, 8)), size=32)
    assert image.shape == (32, 32, 4) and not opaque(image).any()


def test_render_one_voxel_is_a_small_centred_blob():
    g = np.zeros((9, 9, 9))
    g[4, 4, 4] = 1
    image = plots.render_voxels(g, size=90)
    rows, cols = np.nonzero(opaque(image))
    assert 20 < len(rows) < 0.05 * 90 * 90
    assert abs(rows.mean() - 45) < 3 and abs(cols.mean() - 45) < 3
    # three faces are visible, lit differently: at least three distinct colours
    colours = {tuple(np.round(c, 3)) for c in image[opaque(image)][:, :3]}
    assert len(colours) >= 3


def test_render_up_axis_is_drawn_vertically():
    g = np.zeros((16, 16, 16))
    g[7:9, :, 7:9] = 1            # a column along array axis 1 (up in binvox order)
    rows, cols = np.nonzero(opaque(plots.render_voxels(g, size=128, view=(0, 0))))
    assert np.ptp(rows) > 4 * np.ptp(cols)
    # with axis 0 up, array axis 1 is world x: seen end-on from the x axis, lying down from the y axis
    rows, cols = np.nonzero(opaque(plots.render_voxels(g, size=128, view=(0, 0), up_axis=0)))
    assert abs(np.ptp(rows) - np.ptp(cols)) <= 2
    rows, cols = np.nonzero(opaque(plots.render_voxels(g, size=128, view=(90, 0), up_axis=0)))
    assert np.ptp(cols) > 4 * np.ptp(rows)


def test_render_real_shapes(chair, monitor):
    for grid in (chair, monitor):
        image = plots.render_voxels(grid, size=128)
        share = opaque(image).mean()
        assert 0.03 < share < 0.7
        rows, cols = np.nonzero(opaque(image))
        assert abs(rows.mean() - 64) < 0.3 * 128 and abs(cols.mean() - 64) < 0.3 * 128   # the grid box fits
    # another view shows another picture; the colormap changes the colours, not the silhouette
    a = plots.render_voxels(chair, size=96)
    b = plots.render_voxels(chair, size=96, view=(120, 10))
    c = plots.render_voxels(chair, size=96, colormap="copper")
    assert (opaque(a) != opaque(b)).mean() > 0.02
    assert np.array_equal(opaque(a), opaque(c)) and not np.allclose(a, c)


def test_tensorboard_image_is_rgb_uint8(chair):
    for style in plots.STYLES:
        image = plots.voxel_graph_image(chair, "t", style=style)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.std() > 5


def not_blank(path) -> np.ndarray:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    rgb = image[..., :3]
    assert (np.abs(rgb - rgb[0, 0]).sum(-1) > 0.1).mean() > 0.01, f"{path} looks blank"
    return image


@pytest.mark.parametrize("style", plots.STYLES)
def test_cli_file(tmp_path, style):
    out = tmp_path / "chair.png"
    proc = tool("convert_to_graph", "-f", CHAIR, "--style", style, "-o", out, "-c", "0", "--view", "30", "20")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    not_blank(out)


def test_cli_sheet_and_default_output(tmp_path, chair, monitor):
    batch = tmp_path / "batch.npy"
    np.save(batch, np.stack([chair, monitor, chair[::-1], monitor[:, :, ::-1]]))
    proc = tool("convert_to_graph", "-f", batch, "--style", "shaded", "--grid", "1x3")
    assert proc.returncode == 0, proc.stderr
    sheet = not_blank(tmp_path / "3D_graphs" / "batch.png")
    assert sheet.shape[1] > 2 * sheet.shape[0]   # one row of three panels


@pytest.mark.slow
def test_cli_run_folder(tmp_path, chair):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for epoch in (10, 20):
        np.save(run / f"{epoch}.npy", chair[None] * (epoch / 20))
    proc = tool("convert_to_graph", "-n", "r1", "--out", tmp_path / "runs", "--style", "shaded")
    assert proc.returncode == 0, proc.stderr
    assert "drew 2 graphs" in proc.stdout
    for epoch in (10, 20):
        not_blank(run / "3D_graphs" / f"{epoch}.png")
    again = tool("convert_to_graph", "-n", "r1", "--out", tmp_path / "runs")
    assert "drew 0 graphs" in again.stdout and "kept 2 existing" in again.stdout
    forced = tool("convert_to_graph", "-n", "r1", "--out", tmp_path / "runs", "--force")
    assert "drew 2 graphs" in forced.stdout


def test_cli_errors(tmp_path):
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 5)))
    assert "nope.npy: no such file" in error_line(tool("convert_to_graph", "-f", tmp_path / "nope.npy"))
    assert "flat.npy" in error_line(tool("convert_to_graph", "-f", flat))
    assert "--grid" in error_line(tool("convert_to_graph", "-f", CHAIR, "--grid", "3"))
    assert "no such run folder" in error_line(tool("convert_to_graph", "-n", "ghost", "--out", tmp_path))
    assert "--index 3 is out of range" in error_line(tool("convert_to_graph", "-f", CHAIR, "--index", "3"))
    assert not (tmp_path / "3D_graphs").exists()


# --------------------------------------------------------------- training data, empty grids, outputs


def test_tool_colormaps_and_view_are_plots_own():
    from tools import convert_to_graph

    assert convert_to_graph.COLORMAPS is plots.COLORMAPS and convert_to_graph.DEFAULT_VIEW is plots.DEFAULT_VIEW


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CHAIRS.exists(), reason="needs shared/data/voxels (the 875 training chairs)")
def test_cli_sheet_of_the_training_npz(tmp_path):
    out = tmp_path / "sheet.png"
    proc = tool("convert_to_graph", "-f", f"{SHARED_CHAIRS}:train", "--grid", "4x4", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}") and "empty" not in proc.stdout
    sheet = not_blank(out)
    assert abs(sheet.shape[0] - sheet.shape[1]) < 0.1 * sheet.shape[1]


@pytest.mark.slow
def test_cli_every_dataset_source(tmp_path):
    from tf3dgan.data import datasets as data

    folder = tmp_path / "train"
    folder.mkdir()
    for stem in ("chair_0013", "chair_0037", "chair_0040"):
        shutil.copy(FIXTURES / "chair" / "train" / f"{stem}.raw", folder)
    proc = tool("convert_to_graph", "-f", folder, "--grid", "1x3", "--style", "shaded")   # default: beside the folder
    assert proc.returncode == 0, proc.stderr
    sheet = not_blank(tmp_path / "3D_graphs" / "train.png")
    assert sheet.shape[1] > 2 * sheet.shape[0]
    data.write_cache(folder, data.load_dataset(folder))
    for spec in (folder / data.CACHE_NAME, f"{WIN_NPZ}:test", WIN_NPZ, "synthetic:chairs:n=4:res=16"):
        out = tmp_path / "pictures" / "x.png"
        proc = tool("convert_to_graph", "-f", spec, "--grid", "2x2", "--style", "shaded", "--tile", "1.2", "-o", out)
        assert proc.returncode == 0, (spec, proc.stderr)
        not_blank(out)
        out.unlink()
    proc = tool("convert_to_graph", "-f", f"{WIN_NPZ}:test", "--index", "-1", "-o", tmp_path / "last.png")
    assert proc.returncode == 0, proc.stderr
    not_blank(tmp_path / "last.png")
    assert "--index 4 is out of range (it holds 4 grids)" in error_line(
        tool("convert_to_graph", "-f", f"{WIN_NPZ}:test", "--index", "4"))
    assert "npz has no key 'valid'" in error_line(tool("convert_to_graph", "-f", f"{WIN_NPZ}:valid"))
    assert "ghost: no such file or folder" in error_line(tool("convert_to_graph", "-f", tmp_path / "ghost"))


def test_sheet_unpacks_only_the_grids_drawn(tmp_path, monkeypatch):
    from tf3dgan.data import datasets as data
    from tools import convert_to_graph

    asked = []
    real = data.VoxelDataset.grids

    def counting(self, idx=None):
        assert idx is not None, "unpacked the whole dataset"
        asked.extend(np.atleast_1d(np.arange(len(self))[idx]).tolist())
        return real(self, idx)

    monkeypatch.setattr(data.VoxelDataset, "grids", counting)
    assert convert_to_graph.main(["-f", str(WIN_NPZ), "--grid", "1x2", "--style", "shaded",
                                  "-o", str(tmp_path / "s.png")]) == 0
    assert sorted(asked) == [0, 1]


@pytest.mark.slow
def test_cli_empty_grids(tmp_path, chair):
    np.save(tmp_path / "zero.npy", np.zeros((16, 16, 16), np.float32))
    low = np.zeros((2, 16, 16, 16), np.float32)
    low[:, 4:8, 4:8, 4:8] = 0.2
    np.save(tmp_path / "low.npy", low)
    line = error_line(tool("convert_to_graph", "-f", tmp_path / "zero.npy"))
    assert line == f"error: {tmp_path / 'zero.npy'}: no voxel above --threshold 0.3: the grid is empty (every value is 0)"
    # the same line as convert_to_obj's
    assert error_line(tool("convert_to_obj", "-f", tmp_path / "zero.npy")) == line
    line = error_line(tool("convert_to_graph", "-f", tmp_path / "low.npy", "--index", "1", "--style", "shaded"))
    assert line == (f"error: {tmp_path / 'low.npy'}[1]: no voxel above --threshold 0.3 (the grid's largest value is "
                    "0.2); give a lower --threshold (below 0.2) to see its voxels")
    assert line == error_line(tool("convert_to_obj", "-f", tmp_path / "low.npy", "--index", "1"))
    assert error_line(tool("convert_to_graph", "-f", tmp_path / "zero.npy", "--grid", "2x2")).endswith(
        "the grid is empty (every value is 0)")                       # a sheet of one empty grid is that grid
    assert not (tmp_path / "3D_graphs").exists()
    proc = tool("convert_to_graph", "-f", tmp_path / "low.npy", "--threshold", "0.1", "--style", "shaded")
    assert proc.returncode == 0, proc.stderr
    not_blank(tmp_path / "3D_graphs" / "low.png")
    # a sheet draws empty panels and says how many there were
    np.save(tmp_path / "mixed.npy", np.stack([chair, np.zeros_like(chair), chair * 0.25]))
    proc = tool("convert_to_graph", "-f", tmp_path / "mixed.npy", "--grid", "1x3", "--style", "shaded")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == ("2 of the 3 panels are empty (grids 1, 2: no voxel above --threshold 0.3); "
                                            "a lower --threshold may show them")
    not_blank(tmp_path / "3D_graphs" / "mixed.png")


def test_cli_run_folder_skips_and_counts_empty_samples(tmp_path, chair):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    np.save(run / "10.npy", np.zeros((2, 16, 16, 16), np.float32))
    np.save(run / "20.npy", chair[None])
    proc = tool("convert_to_graph", "-n", "r", "--out", tmp_path / "runs", "--style", "shaded")
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {run / '10.npy'}: {run / '10.npy'}[0]: no voxel above --threshold 0.3" in proc.stdout
    assert "drew 1 graph into" in proc.stdout and "skipped 1 with no voxel above --threshold 0.3" in proc.stdout
    assert sorted(p.name for p in (run / "3D_graphs").iterdir()) == ["20.png"]


def test_cli_unwritable_output_is_one_line(tmp_path):
    assert_unwritable_output_is_one_line(tmp_path, "convert_to_graph", CHAIR, ".png")


@pytest.mark.parametrize("code, words", [(errno.EROFS, "choose a writable location"), (errno.ENOSPC, "free some space")])
def test_read_only_or_full_disk_is_one_line_in_process(tmp_path, monkeypatch, capsys, code, words):
    from tools import convert_to_graph

    target = tmp_path / "c.png"
    argv = ["-f", str(CHAIR), "--style", "shaded", "-o", str(target)]
    assert_failed_writes_are_one_line(monkeypatch, capsys, convert_to_graph.main, argv, target, code, words)
    assert not list(tmp_path.iterdir())


def imported_modules(*args) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    return {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["-f", "nope.npy"], ["-f", str(CHAIR), "--grid", "3"],
                                  ["-f", str(CHAIR), "-o", "x.gif"], ["-f", str(CHAIR), "--style", "cartoon"],
                                  ["-f", str(CHAIR), "--threshold", "2"]])
def test_help_and_bad_flags_import_no_heavy_modules(args):
    heavy = {"tensorflow", "keras", "jax", "torch", "trimesh", "scipy", "skimage", "matplotlib"}
    assert not imported_modules(REPO / "tools" / "convert_to_graph.py", *args) & heavy


def test_draw_graphs_called_directly(tmp_path, chair):
    """tf3dgan.outputs.graphs.draw_graphs (what tools/convert_to_graph.py calls) on the fixture chairs: one grid, a
    sheet of the fixture .npz, and a run's samples; what it returns names the pictures it drew."""
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.outputs.graphs import draw_graphs, parse_grid

    one = draw_graphs(file=CHAIR, output=tmp_path / "one.png", style="shaded", colormap="copper")
    assert one.pictures == [tmp_path / "one.png"] and one.note is None and one.threshold == 0.3
    assert one.summary().startswith(f"wrote {tmp_path / 'one.png'} in ")
    not_blank(tmp_path / "one.png")
    sheet = draw_graphs(file=f"{WIN_NPZ}:test", grid="1x3", style="shaded", tile=1.0, output=tmp_path / "s.png")
    image = not_blank(tmp_path / "s.png")
    assert sheet.pictures == [tmp_path / "s.png"] and image.shape[1] > 2 * image.shape[0]
    assert parse_grid("2×3") == (2, 3) and parse_grid(None) is None
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    np.save(run / "10.npy", chair[None])
    np.save(run / "20.npy", np.zeros((1, 8, 8, 8), np.float32))
    heard = []
    drawn = draw_graphs("r", out=tmp_path / "runs", style="shaded", report=heard.append)
    assert drawn.pictures == [run / "3D_graphs" / "10.png"] and drawn.empty == [run / "20.npy"]
    assert len(heard) == 1 and heard[0].startswith(f"skipped {run / '20.npy'}: ")
    not_blank(run / "3D_graphs" / "10.png")
    kept = draw_graphs("r", out=tmp_path / "runs")
    assert kept.pictures == [] and kept.existing == 1 and "kept 1 existing" in kept.summary()
    for kwargs, words in ((dict(file=CHAIR, grid="3"), "--grid wants ROWSxCOLS"),
                          (dict(file=CHAIR, tile=0.1), "--tile must be between"),
                          (dict(file=CHAIR, output=tmp_path / "x.gif"), "unknown picture type"),
                          (dict(file=CHAIR, grid="2x2", index=1), "do not go together")):
        with pytest.raises(Tf3dganError, match=words):
            draw_graphs(**kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "runs", "s.png"]

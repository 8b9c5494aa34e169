"""tf3dgan.plots' voxel pictures (scatter and shaded) and tools/convert_to_graph.py."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from tf3dgan import plots
from tf3dgan.binvox import read_binvox, read_raw

from _cli import FIXTURES, error_line, tool

CHAIR = FIXTURES / "chair" / "train" / "chair_0013.raw"
MONITOR = FIXTURES / "meshes" / "ModelNet10" / "monitor" / "train" / "monitor_0249.binvox"


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

"""Pictures of a run: loss graphs and 3D scatter graphs of voxel grids.

Everything renders with matplotlib's Agg backend (no display needed) and is written
atomically.  The trainer uses the same functions for ``plots/``, ``3D_graphs/`` and the
TensorBoard sample image, so there is one renderer of each kind in the code base.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage, signal

from tf3dgan.atomic import atomic_path

# the colour maps (by the original's -c index), the default view and the 3D graph styles (the seed's scatter
# of surface voxels, or a shaded NumPy render of the voxel faces) are the tools' lists, dependency-free
from tf3dgan.choices import COLORMAPS, DEFAULT_VIEW  # noqa: F401  (re-exported)
from tf3dgan.choices import GRAPH_STYLES as STYLES

SAVGOL_WINDOW = 51
SAVGOL_ORDER = 3


def smooth(values: np.ndarray, window: int = SAVGOL_WINDOW, order: int = SAVGOL_ORDER) -> np.ndarray:
    """Savitzky–Golay smoothing (scipy) of a loss curve; short curves are returned as is."""
    values = np.asarray(values, dtype=np.float64)
    if values.size <= order + 2:
        return values
    window = min(window, values.size if values.size % 2 else values.size - 1)
    if window <= order:
        return values
    return signal.savgol_filter(values, window, order, mode="interp")


def save_loss_plot(path, d_loss, g_loss, epochs, val_loss=None, title="") -> Path:
    """The seed's loss graph: raw and smoothed D, G (and validation D) loss against epoch."""
    d_loss, g_loss, epochs = (np.asarray(a, dtype=np.float64) for a in (d_loss, g_loss, epochs))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    curves = [("Discriminator's loss", d_loss, "cornflowerblue", "navy")]
    if val_loss is not None and np.isfinite(np.asarray(val_loss, dtype=np.float64)).any():
        curves.append(("D loss, validation set", np.asarray(val_loss, dtype=np.float64), "lightgreen", "limegreen"))
    curves.append(("Generator's loss", g_loss, "indianred", "crimson"))
    for label, values, raw_colour, smooth_colour in curves:
        ax.plot(epochs, values, color=raw_colour, alpha=0.5, label=label)
        ax.plot(epochs, smooth(values), color=smooth_colour, alpha=0.8, label=f"{label} (Savitzky–Golay)")
    finite = np.concatenate([c[1][np.isfinite(c[1])] for c in curves])
    if finite.size:
        low, high = np.percentile(finite, 1), np.percentile(finite, 99)
        pad = 0.3 * max(high - low, 1e-3)
        ax.set_ylim(min(0.0, low - pad), high + pad)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    ax.set_title(title)
    ax.grid(True)
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def surface_voxels(grid: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """Indices ``(K, 3)`` of occupied voxels with at least one exposed face (the seed's
    ``voxel2points``: occupied cells whose 3×3×3 neighbourhood is not full), vectorised."""
    solid = _solid(grid, threshold)
    interior = ndimage.binary_erosion(solid, structure=np.ones((3, 3, 3), bool), border_value=0)
    return np.argwhere(solid & ~interior)


def _solid(grid, threshold) -> np.ndarray:
    solid = np.asarray(grid).squeeze() > threshold
    if solid.ndim != 3:
        raise ValueError(f"expected one 3D grid, got shape {np.shape(grid)}")
    return solid


def _world_axes(up_axis: int) -> list[int]:
    """Array axes shown as world (x, y, z): the two horizontal axes in order, then ``up_axis`` (z-up,
    the same convention as the meshes of ``tf3dgan.outputs.mesh``)."""
    return [a for a in range(3) if a != up_axis] + [up_axis]


# ------------------------------------------------------------------------------------------ scatter
def voxel_graph_figure(grid: np.ndarray, title: str = "", threshold: float = 0.3,
                       colormap: str = "viridis", up_axis: int = 1, view=DEFAULT_VIEW, ax=None):
    """The seed's 3D scatter graph of surface voxels, coloured by height.

    ``up_axis`` is the array axis that points up (1 for binvox/ModelNet raw order
    ``[x][z][y]``, the data this package trains on); ``view`` is ``(azimuth, elevation)`` in degrees,
    matplotlib's convention.  Draws into ``ax`` (a 3D axes) when given."""
    points = surface_voxels(grid, threshold)
    fig = None
    if ax is None:
        fig = plt.figure(figsize=(6, 6), dpi=100)
        ax = fig.add_subplot(projection="3d")
    dim = max(np.asarray(grid).squeeze().shape)
    if len(points):
        x, y, z = (points[:, a] for a in _world_axes(up_axis))
        ax.scatter(x, y, z, c=z, cmap=colormap, s=25 * (32 / dim) ** 2, marker=".", vmin=0, vmax=dim)
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(0, dim)
    ax.view_init(elev=view[1], azim=view[0])
    ax.set_title(title)
    return fig if fig is not None else ax.figure


# ------------------------------------------------------------------------------------------- shaded
def render_voxels(grid: np.ndarray, size: int = 256, threshold: float = 0.3, colormap: str = "viridis",
                  up_axis: int = 1, view=DEFAULT_VIEW, background=(1.0, 1.0, 1.0, 0.0)) -> np.ndarray:
    """Orthographic picture of a voxel grid as an RGBA float array ``(size, size, 4)``, NumPy only.

    Every exposed voxel face that looks towards the camera is sampled on a small lattice of points
    (enough for ≥ 1.5 samples per pixel), the points are projected, a depth buffer keeps the nearest
    one per pixel, and each pixel is coloured by height (``colormap``) times Lambert shading of its
    face's normal, with face borders slightly darkened so single voxels stay readable.  The view
    ``(azimuth, elevation)`` follows matplotlib's convention (the scatter graph's), and the whole grid
    box always fits the picture, so sheets of samples share one scale.  Empty pixels get
    ``background`` (transparent white by default)."""
    solid = _solid(grid, threshold)
    axes = _world_axes(up_axis)
    solid = np.transpose(solid, axes)                 # now [x][y][z], z up
    shape = np.array(solid.shape, dtype=np.float64)
    az, el = np.radians(view[0]), np.radians(view[1])
    eye = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])   # towards the camera
    right = np.array([-np.sin(az), np.cos(az), 0.0])
    up = np.cross(eye, right)
    light = _unit(0.55 * eye + 0.35 * up - 0.45 * right + np.array([0.0, 0.0, 0.35]))

    corners = np.array(np.meshgrid(*[[0.0, s] for s in shape], indexing="ij")).reshape(3, -1).T
    centre = shape / 2
    half = np.abs((corners - centre) @ np.stack([right, up], 1)).max()
    pixels = size / (2 * half * 1.04)                 # pixels per voxel; 4% margin
    k = max(2, int(np.ceil(1.5 * pixels)))            # samples per face edge
    offsets = (np.arange(k) + 0.5) / k
    ou, ov = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    border = ((np.minimum(ou, 1 - ou) < 0.09) | (np.minimum(ov, 1 - ov) < 0.09)).astype(np.float64)

    image = np.empty((size, size, 4))
    image[:] = background
    padded = np.pad(solid, 1)
    pts_all, shade_all, height_all = [], [], []
    for axis in range(3):
        for side in (-1, 1):
            normal = np.zeros(3)
            normal[axis] = side
            if normal @ eye <= 0:
                continue                              # faces turned away are hidden behind others
            neighbour = np.roll(padded, -side, axis=axis)[1:-1, 1:-1, 1:-1]
            cells = np.argwhere(solid & ~neighbour).astype(np.float64)
            if not len(cells):
                continue
            u, v = (axis + 1) % 3, (axis + 2) % 3
            base = cells.copy()
            base[:, axis] += 1.0 if side > 0 else 0.0
            pts = np.repeat(base, k * k, axis=0)
            pts[:, u] += np.tile(ou, len(cells))
            pts[:, v] += np.tile(ov, len(cells))
            lambert = 0.35 + 0.65 * max(float(normal @ light), 0.0)
            shade_all.append(lambert * (1.0 - 0.22 * np.tile(border, len(cells))))
            height_all.append(pts[:, 2])
            pts_all.append(pts)
    if not pts_all:
        return image
    pts = np.concatenate(pts_all) - centre
    shade, height = np.concatenate(shade_all), np.concatenate(height_all)
    col = np.clip((pts @ right) * pixels + size / 2, 0, size - 1).astype(np.int64)
    row = np.clip(size / 2 - (pts @ up) * pixels, 0, size - 1).astype(np.int64)
    depth = -(pts @ eye)
    flat = row * size + col
    order = np.lexsort((depth, flat))
    first = order[np.r_[True, flat[order][1:] != flat[order][:-1]]]
    colours = plt.get_cmap(colormap)(np.clip(height[first] / shape[2], 0, 1))[:, :3] * shade[first, None]
    image.reshape(-1, 4)[flat[first]] = np.concatenate([colours, np.ones((len(first), 1))], 1)
    return image


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -------------------------------------------------------------------------------- one API for both
def voxel_sheet_figure(grids, titles=None, rows: int | None = None, cols: int | None = None,
                       style: str = "scatter", threshold: float = 0.3, colormap: str = "viridis",
                       up_axis: int = 1, view=DEFAULT_VIEW, title: str = "", tile: int = 3):
    """A ``rows × cols`` sheet of grids (one panel each) in ``style`` ``scatter`` or ``shaded``."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    grids = list(grids)
    n = len(grids)
    if rows is None and cols is None:
        cols = int(np.ceil(np.sqrt(n)))
    if rows is None:
        rows = int(np.ceil(n / cols))
    if cols is None:
        cols = int(np.ceil(n / rows))
    titles = list(titles) if titles is not None else [""] * n
    fig = plt.figure(figsize=(tile * cols, tile * rows + (0.4 if title else 0)), dpi=100)
    for i, grid in enumerate(grids[:rows * cols]):
        if style == "scatter":
            ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
            voxel_graph_figure(grid, titles[i], threshold, colormap, up_axis, view, ax=ax)
        else:
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(render_voxels(grid, size=int(tile * 100), threshold=threshold, colormap=colormap,
                                    up_axis=up_axis, view=view), interpolation="antialiased")
            ax.set_axis_off()
            ax.set_title(titles[i], fontsize="medium")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_voxel_graph(path, grid: np.ndarray, title: str = "", threshold: float = 0.3,
                     colormap: str = "viridis", up_axis: int = 1, style: str = "scatter",
                     view=DEFAULT_VIEW) -> Path:
    """Write the 3D graph of ``grid`` to ``path`` (PNG): the seed's scatter, or the shaded render."""
    if style == "scatter":
        return _save(voxel_graph_figure(grid, title, threshold, colormap, up_axis, view), path, tight=True)
    return save_voxel_sheet(path, [grid], [title], 1, 1, style, threshold, colormap, up_axis, view, tile=6)


def save_voxel_sheet(path, grids, titles=None, rows=None, cols=None, style="scatter", threshold=0.3,
                     colormap="viridis", up_axis=1, view=DEFAULT_VIEW, title="", tile=3) -> Path:
    """Write a sheet of several grids (see ``voxel_sheet_figure``) to ``path``."""
    fig = voxel_sheet_figure(grids, titles, rows, cols, style, threshold, colormap, up_axis, view, title, tile)
    return _save(fig, path, tight=True)


def voxel_graph_image(grid: np.ndarray, title: str = "", threshold: float = 0.3,
                      colormap: str = "viridis", up_axis: int = 1, style: str = "shaded",
                      view=DEFAULT_VIEW, size: int = 256) -> np.ndarray:
    """The graph as an RGB uint8 array ``(H, W, 3)`` (for TensorBoard); ``shaded`` is drawn without
    matplotlib, on white."""
    if style == "shaded":
        rgba = render_voxels(grid, size, threshold, colormap, up_axis, view)
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        return (255 * rgb + 0.5).astype(np.uint8)
    fig = voxel_graph_figure(grid, title, threshold, colormap, up_axis, view)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _save(fig, path, tight=False) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path

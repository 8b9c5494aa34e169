"""Pictures of a run: loss graphs and 3D scatter graphs of voxel grids.

Everything renders with matplotlib's Agg backend (no display needed) and is written
atomically.  The trainer uses the same functions for ``plots/``, ``3D_graphs/`` and the
TensorBoard sample image, so there is one renderer of each kind in the code base.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage, signal  # noqa: E402

from .atomic import atomic_path  # noqa: E402

#: the original convert_to_graph.py colormap choices, by ``-c`` index
COLORMAPS = ("copper", "viridis", "plasma", "winter", "cool", "ocean", "inferno", "coolwarm")
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
    solid = np.asarray(grid).squeeze() > threshold
    if solid.ndim != 3:
        raise ValueError(f"expected one 3D grid, got shape {np.shape(grid)}")
    interior = ndimage.binary_erosion(solid, structure=np.ones((3, 3, 3), bool), border_value=0)
    return np.argwhere(solid & ~interior)


def voxel_graph_figure(grid: np.ndarray, title: str = "", threshold: float = 0.3,
                       colormap: str = "viridis", up_axis: int = 1):
    """The seed's 3D scatter graph of surface voxels, coloured by height.

    ``up_axis`` is the array axis that points up (1 for binvox/ModelNet raw order
    ``[x][z][y]``, the data this package trains on)."""
    points = surface_voxels(grid, threshold)
    fig = plt.figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot(projection="3d")
    dim = np.asarray(grid).squeeze().shape[0]
    if len(points):
        horizontal = [a for a in range(3) if a != up_axis]
        x, y, z = points[:, horizontal[0]], points[:, horizontal[1]], points[:, up_axis]
        ax.scatter(x, y, z, c=z, cmap=colormap, s=25 * (32 / dim) ** 2, marker=".", vmin=0, vmax=dim)
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(0, dim)
    ax.set_title(title)
    return fig


def save_voxel_graph(path, grid: np.ndarray, title: str = "", threshold: float = 0.3,
                     colormap: str = "viridis", up_axis: int = 1) -> Path:
    """Write the 3D scatter graph of ``grid`` to ``path`` (PNG)."""
    return _save(voxel_graph_figure(grid, title, threshold, colormap, up_axis), path, tight=True)


def voxel_graph_image(grid: np.ndarray, title: str = "", threshold: float = 0.3,
                      colormap: str = "viridis", up_axis: int = 1) -> np.ndarray:
    """The same graph as an RGB uint8 array ``(H, W, 3)`` (for TensorBoard)."""
    fig = voxel_graph_figure(grid, title, threshold, colormap, up_axis)
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

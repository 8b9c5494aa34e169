"""Voxel grids to triangle meshes (the original convert_to_obj.py, vectorised, plus more mesh kinds and formats).

Three kinds of mesh (``MESH_KINDS``):

``cubes``          the original's: one whole cube (8 vertices, 12 triangles) per occupied voxel that has at least
                   one exposed face (a face whose neighbour is empty or outside the grid).  Not watertight.
``faces``          only the exposed faces, with vertices shared between neighbouring faces, so the surface of a
                   grid is closed (watertight, outward normals) and its volume is exactly the voxel count × scale³.
                   Where two voxels touch only along an edge the surface is kept apart there (each voxel's faces
                   keep their own vertices), as if occupied voxels were 6-connected; a rare pinch (the same two
                   voxels joined around both ends of such an edge) can still leave one edge shared by 4 triangles.
``marching-cubes`` ``skimage.measure.marching_cubes`` at the threshold on the grid padded with empty voxels
                   (optionally Gaussian-smoothed first), faces oriented outward: a smooth, closed surface.

Axes.  Grids are ``[x][z][y]`` arrays (the binvox order; axis 1 is up).  Voxel ``(i, j, k)`` spans the unit cube
``[i, i+1] × [j, j+1] × [k, k+1]`` and vertices are written as ``(x, y, z) = (axis0, axis2, axis1) · scale``, so the
mesh is **z-up** like the ModelNet models.  Many OBJ viewers assume y-up: rotate by -90° about x there (or import with
"Z up" in Blender's OBJ importer).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tf3dgan.atomic import atomic_path, check_output_folder
from tf3dgan.data.binvox import read_binvox, read_raw
from tf3dgan.data.datasets import SYNTHETIC_PREFIX, VoxelDataset, as_batch, check_finite, load_dataset, split_npz_key
from tf3dgan.errors import DataError, Tf3dganError, numpy_load_reason

MESH_KINDS = ("cubes", "faces", "marching-cubes")
FORMATS = ("obj", "stl", "ply", "glb")
from tf3dgan.choices import DEFAULT_THRESHOLD  # noqa: E402  (the original's 0.3)

DEFAULT_SCALE = 0.01      # the original's voxel size


# --------------------------------------------------------------------------------------------------- loading
SOURCES = ".npy, .raw, .binvox, .npz[:KEY], a folder of voxel files or synthetic:KIND"


def load_grids(path: str | os.PathLike) -> np.ndarray:
    """Read ``.npy`` (``(D,H,W)``, ``(N,D,H,W)``, ``(N,1,D,H,W)`` or ``(N,D,H,W,1)``), ``.raw`` or ``.binvox``
    as a float32 ``(N, D, H, W)`` array (any box shape; NaN or infinite values are refused)."""
    name = os.fspath(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{name}: no such file")
    if p.is_dir():
        raise DataError(f"{name}: is a folder, not a voxel file (.npy, .raw or .binvox)")
    suffix = p.suffix.lower()
    if suffix == ".raw":
        return read_raw(p)[None].astype(np.float32)
    if suffix == ".binvox":
        return read_binvox(p)[None].astype(np.float32)
    if suffix != ".npy":
        raise DataError(f"{name}: unknown voxel file type {p.suffix or '(none)'!r} (expected .npy, .raw or .binvox)")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{name}: not a readable .npy array ({numpy_load_reason(exc)})") from exc
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"{name}: holds a {getattr(a, 'dtype', type(a))} array, expected numbers")
    a = as_batch(a, name, cubic=False)
    if 0 in a.shape:
        raise DataError(f"{name}: array of shape {a.shape} is empty")
    check_finite(a, name)
    return a.astype(np.float32, copy=False)


@dataclass
class GridSource:
    """The grids of one ``-f`` source of the tools (see :func:`open_grids`), unpacked only when asked for.

    ``spec`` is the source as given; ``folder`` and ``stem`` name default outputs
    (``<folder>/<stem>.obj``, ``<folder>/3D_graphs/<stem>.png``); ``names`` are a dataset's grid
    names (None for a voxel file, whose grids are numbered).
    """

    spec: str
    folder: Path
    stem: str
    count: int
    names: list[str] | None = None
    values: np.ndarray | None = field(default=None, repr=False)       # a voxel file's float32 grids
    dataset: VoxelDataset | None = field(default=None, repr=False)    # a dataset's packed grids

    def __len__(self) -> int:
        return self.count

    def grids(self, indices) -> np.ndarray:
        """float32 ``(n, D, H, W)`` grids ``indices`` (a list of ints)."""
        indices = list(indices)
        if self.values is not None:
            return self.values[indices]
        return self.dataset.grids(indices).astype(np.float32)

    def index(self, i: int, flag: str = "--index") -> int:
        """``i`` (negative counts from the end) as an index, or a DataError saying how many grids there are."""
        if not -self.count <= i < self.count:
            raise DataError(f"{self.spec}: {flag} {i} is out of range (it holds {self.count} grid"
                            f"{'s' * (self.count != 1)})")
        return i % self.count

    def label(self, i: int) -> str:
        """Grid ``i`` in messages: ``samples.npy[3]``, ``chairs.npz:train[3] (chair_0004)`` or the file alone."""
        if self.count == 1 and self.names is None:
            return self.spec
        return f"{self.spec}[{i}]" + (f" ({self.names[i]})" if self.names else "")

    def title(self, i: int) -> str:
        """A short panel title: the grid's name, its number, or the file's stem."""
        if self.names:
            return self.names[i]
        return str(i) if self.count > 1 else self.stem


def open_grids(spec: str | os.PathLike, limit: int | None = None) -> GridSource:
    """Open any source ``tools/train.py -d`` takes (a folder, ``.npz``, ``FILE.npz:KEY``, a dataset cache,
    ``synthetic:KIND...``) or a ``.npy`` / ``.raw`` / ``.binvox`` file.

    ``.npy`` files keep their values (generated samples are floats); datasets are read by
    :func:`tf3dgan.data.datasets.load_dataset` (0/1 grids, at most ``limit`` of them) and unpacked a few at a time.
    """
    text = os.fspath(spec)
    if text.startswith(SYNTHETIC_PREFIX):
        ds = load_dataset(text, limit=limit)
        kind = text[len(SYNTHETIC_PREFIX):].split(":")[0]
        return GridSource(text, Path("."), f"synthetic_{kind}", len(ds), ds.names, dataset=ds)
    path, key = split_npz_key(text)
    if not path.exists():
        raise DataError(f"{text if key is None else path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() == ".npz":
        ds = load_dataset(text, limit=limit)
        if path.is_dir():
            named = path if path.name not in ("", ".", "..") else path.resolve()
            folder, stem = named.parent, named.name
        else:
            folder, stem = path.parent, path.stem + (f"_{key}" if key else "")
        return GridSource(text, folder, stem, len(ds), ds.names, dataset=ds)
    if path.suffix.lower() not in (".npy", ".raw", ".binvox"):
        raise DataError(f"{text}: unknown voxel file type {path.suffix or '(none)'!r} (give {SOURCES})")
    values = load_grids(path)
    return GridSource(text, path.parent, path.stem, len(values), None, values=values)


# --------------------------------------------------------------------------------------------------- meshing
def occupancy(grid: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean grid of the voxels whose value is above ``threshold`` (NaN counts as empty)."""
    return np.asarray(grid) > threshold


class EmptyGridError(DataError):
    """A grid with no voxel above the threshold: nothing to draw or mesh."""


def check_occupied(grid: np.ndarray, threshold: float = DEFAULT_THRESHOLD, name: str = "grid") -> np.ndarray:
    """The occupancy of ``grid`` (see :func:`occupancy`); an :class:`EmptyGridError` naming ``name``, the
    threshold and the grid's largest value when no voxel is above the threshold.  Every tool that draws or
    meshes a single grid uses this, so an empty grid is the same one-line error everywhere."""
    occ = occupancy(grid, threshold)
    if occ.any():
        return occ
    g = np.asarray(grid)
    finite = g[np.isfinite(g)] if g.dtype.kind in "fc" else g
    if finite.size == 0:
        raise EmptyGridError(f"{name}: no voxel above --threshold {threshold:g}: the grid holds no finite value")
    top, bottom = float(finite.max()), float(finite.min())
    if top == bottom:
        raise EmptyGridError(f"{name}: no voxel above --threshold {threshold:g}: the grid is empty "
                             f"(every value is {top:g})")
    raise EmptyGridError(f"{name}: no voxel above --threshold {threshold:g} (the grid's largest value is "
                         f"{top:g}); give a lower --threshold (below {top:g}) to see its voxels")


def empty_grids(grids, threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """Indices of the grids (of a batch or list) with no voxel above ``threshold``."""
    return [i for i, g in enumerate(grids) if not occupancy(g, threshold).any()]


def empty_note(empty: list[int], total: int, threshold: float, what: str = "grids") -> str:
    """One line saying how many of ``total`` grids were empty (see :func:`empty_grids`)."""
    shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
    which = f"all {total} {what} are" if len(empty) == total else (
        f"{len(empty)} of the {total} {what} {'is' if len(empty) == 1 else 'are'}")
    return (f"{which} empty (grid{'s' * (len(empty) != 1)} {shown}: no voxel above --threshold {threshold:g}); "
            "a lower --threshold may show them")


def _face_quads(ax: int, s: int) -> np.ndarray:
    """The 4 cube corners (as 0/1 offsets, shape (4, 3)) of the face on axis ``ax`` at side ``s``, wound so the
    normal points outward in index space."""
    u, v = (ax + 1) % 3, (ax + 2) % 3
    quad = np.zeros((4, 3), dtype=np.int64)
    quad[:, ax] = 1 if s > 0 else 0
    quad[:, u] = [0, 1, 1, 0]
    quad[:, v] = [0, 0, 1, 1]
    return quad if s > 0 else quad[::-1].copy()


_DIRS = [(ax, s) for ax in range(3) for s in (1, -1)]


def _corner_index(offsets: np.ndarray) -> np.ndarray:
    return offsets[..., 0] * 4 + offsets[..., 1] * 2 + offsets[..., 2]


def _exposed(pad: np.ndarray, ax: int, s: int) -> np.ndarray:
    """Mask (padded shape) of occupied voxels whose neighbour at side ``s`` of axis ``ax`` is empty."""
    return pad & ~np.roll(pad, -s, axis=ax)   # the padding's empty border makes the roll safe


def _quads_to_tris(quads: np.ndarray) -> np.ndarray:
    return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


def _to_output(verts_index: np.ndarray, tris: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Index-space (axis0, axis1, axis2) vertices to z-up (axis0, axis2, axis1)·scale; the axis swap is a reflection,
    so the winding is reversed to keep normals outward."""
    verts = verts_index[:, [0, 2, 1]].astype(np.float64) * scale
    return verts, np.ascontiguousarray(tris[:, ::-1])


def _faces_mesh(occ: np.ndarray, whole_cubes: bool) -> tuple[np.ndarray, np.ndarray]:
    pad = np.pad(occ, 1)
    shape = np.array(pad.shape)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    exposed = {d: _exposed(pad, *d) for d in _DIRS}
    if whole_cubes:
        surface = np.zeros_like(pad)
        for m in exposed.values():
            surface |= m
        cells = np.argwhere(surface)
        vid = cells @ strides
        quads = [vid[:, None] * 8 + _corner_index(_face_quads(*d))[None] for d in _DIRS]
        quads = np.concatenate(quads)
        used, inverse = np.unique(quads, return_inverse=True)
        tris = _quads_to_tris(inverse.reshape(quads.shape))
        corners = np.stack([(used // 8) // strides[0], (used // 8) // strides[1] % shape[1], (used // 8) % shape[2]], 1)
        offs = np.stack([(used % 8) // 4, (used % 8) // 2 % 2, used % 2], 1)
        return (corners + offs - 1).astype(np.float64), tris

    # Per-voxel corner ids (voxel*8 + corner), then glue each exposed face to the face that continues the surface
    # across each of its edges: flat (same plane, next voxel) or concave (the voxel diagonally beyond).  Convex edges
    # join faces of the same voxel, whose corners are already shared.  Occupied voxels touching only along an edge
    # keep their own vertices there, which keeps every edge shared by exactly two triangles.
    quads, pairs_a, pairs_b = [], [], []
    for ax, s in _DIRS:
        ex = exposed[(ax, s)]
        cells = np.argwhere(ex)
        if not len(cells):
            continue
        vid = cells @ strides
        quads.append(vid[:, None] * 8 + _corner_index(_face_quads(ax, s))[None])
        n = np.zeros(3, dtype=np.int64)
        n[ax] = s
        for dax in range(3):
            if dax == ax:
                continue
            for ds in (1, -1):
                d = np.zeros(3, dtype=np.int64)
                d[dax] = ds
                nb = cells + d
                has = pad[tuple(nb.T)]
                if not has.any():
                    continue
                c, nb = cells[has], nb[has]
                beyond = nb + n
                concave = pad[tuple(beyond.T)]
                target = np.where(concave[:, None], beyond, nb)
                # the two corners of c on the shared edge: side s on ax, side ds on dax, both ends of the free axis
                free = 3 - ax - dax
                for f in (0, 1):
                    off = np.zeros(3, dtype=np.int64)
                    off[ax] = 1 if s > 0 else 0
                    off[dax] = 1 if ds > 0 else 0
                    off[free] = f
                    off_t = off[None] + c - target            # the same point as a corner of the target voxel
                    pairs_a.append((c @ strides) * 8 + _corner_index(off[None]))
                    pairs_b.append((target @ strides) * 8 + _corner_index(off_t))
    quads = np.concatenate(quads)
    used, inverse = np.unique(quads, return_inverse=True)
    quads_local = inverse.reshape(quads.shape)
    if pairs_a:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = np.searchsorted(used, np.concatenate(pairs_a))
        b = np.searchsorted(used, np.concatenate(pairs_b))
        g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(len(used), len(used)))
        _, label = connected_components(g, directed=False)
    else:
        label = np.arange(len(used))
    # one position per label (all members share it)
    vox, cor = used // 8, used % 8
    pos = np.stack([vox // strides[0] + cor // 4, vox // strides[1] % shape[1] + cor // 2 % 2,
                    vox % shape[2] + cor % 2], 1) - 1
    nlab = int(label.max()) + 1
    verts = np.zeros((nlab, 3), dtype=np.float64)
    verts[label] = pos
    return verts, _quads_to_tris(label[quads_local])


def _marching_cubes(grid: np.ndarray, threshold: float, smooth: float) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    g = np.nan_to_num(np.asarray(grid, dtype=np.float32), nan=-np.inf)
    g = np.maximum(g, threshold - 1.0)   # nothing far below the level: padding and smoothing behave alike everywhere
    g = np.pad(g, 2, constant_values=min(0.0, threshold - 1.0))
    if smooth and smooth > 0:
        from scipy.ndimage import gaussian_filter

        g = gaussian_filter(g, sigma=float(smooth), mode="constant", cval=min(0.0, threshold - 1.0))
    if not (g.max() > threshold):
        raise ValueError("nothing above the threshold after smoothing")
    verts, faces, _, _ = marching_cubes(g, level=threshold)
    verts = verts - 2 + 0.5   # voxel (i,j,k)'s centre is at i+0.5
    return verts, faces.astype(np.int64)


def grid_to_mesh(grid: np.ndarray, threshold: float = DEFAULT_THRESHOLD, mesh: str = "cubes",
                 scale: float = DEFAULT_SCALE, smooth: float = 0.0, name: str = "grid"):
    """A ``trimesh.Trimesh`` of the voxels of ``grid`` (a 3-D array, ``[x][z][y]``) above ``threshold``.

    ``mesh`` is one of ``MESH_KINDS``; ``smooth`` (a Gaussian sigma in voxels) applies to ``marching-cubes`` only.
    Raises :class:`EmptyGridError` (see :func:`check_occupied`) naming ``name`` when no voxel is above the
    threshold.
    """
    import trimesh

    grid = np.asarray(grid)
    if grid.ndim != 3 or 0 in grid.shape:
        raise DataError(f"{name}: a grid of shape {grid.shape} is not a 3-D voxel grid")
    if mesh not in MESH_KINDS:
        raise Tf3dganError(f"unknown mesh kind {mesh!r} (choose from {', '.join(MESH_KINDS)})")
    occ = check_occupied(grid, threshold, name)
    if mesh == "marching-cubes":
        try:
            v, f = _marching_cubes(grid, threshold, smooth)
        except (ValueError, RuntimeError) as exc:
            raise DataError(f"{name}: marching cubes found no surface at threshold {threshold:g} ({exc})") from exc
    else:
        v, f = _faces_mesh(occ, whole_cubes=(mesh == "cubes"))
    v, f = _to_output(v, f, scale)
    m = trimesh.Trimesh(vertices=v, faces=f, process=(mesh == "marching-cubes"))
    if mesh == "marching-cubes" and m.volume < 0:
        m.invert()
    return m


def check_output(path: str | os.PathLike) -> Path:
    """``path``, once its folder passed :func:`tf3dgan.atomic.check_output_folder` (refused before any work)."""
    path = Path(path)
    check_output_folder(path.parent)
    return path


def export_mesh(m, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write mesh ``m`` to ``path`` atomically in ``fmt`` (default: from the suffix; one of ``FORMATS``)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise Tf3dganError(f"{path}: unknown mesh format {fmt!r} (choose from {', '.join(FORMATS)})")
    data = m.export(file_type=fmt)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path

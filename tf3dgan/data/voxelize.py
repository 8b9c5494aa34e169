"""Voxelize triangle meshes the way Patrick Min's ``binvox`` does, in plain NumPy.

Three methods (see ``shared/data/SOURCES.md``, sections 2-3):

* ``binvox-win`` (:data:`DEFAULT_METHOD`): what the original 64-3D-RaSGAN data was made
  with. Windows ``binvox.exe -d 64`` voxelizes at ``2*dim`` and OR-pools 2x2x2 cells to
  ``dim`` (a cell is set if any of its 8 children is set).
* ``binvox``: binvox's default method at ``dim`` (Linux ``binvox -d dim``).
* ``surface``: ``binvox -e``: every cell a triangle touches (a hollow shell; see
  :data:`SURFACE_SAT_HALF_SIDE` for binvox's exact cell test).

Placement (as binvox): one uniform scale ``s = dim / longest side of the bounding box``;
the bounding-box minimum sits at grid index 0 on every axis, or, with ``center=True``
(``-cb``), each axis is centred. Cell ``i`` covers ``[i, i+1)`` in scaled units.

The solid methods sample cell centres. A cell is set if **carving** says inside (between
the first and the last surface hit along every one of the 3 axes: binvox's 6 z-buffer
views) or if **parity voting** gives at least 3 of 6 votes (a view votes inside when the
ray from its side to the cell centre crosses the surface an odd number of times, so
coincident duplicate faces cancel). Surface hits are found by casting one ray per column
of cell centres along each axis and intersecting it with every triangle (2-D
point-in-triangle test on the projection, with a consistent tie rule for shared edges,
and interpolated depth).

Returned grids are uint8 0/1 ``(dim, dim, dim)`` in binvox's native order ``[x][z][y]``
(axis 0 = mesh x, axis 1 = mesh z, axis 2 = mesh y), ready for
:func:`tf3dgan.data.binvox.write_raw`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tf3dgan.errors import DataError, Tf3dganError

METHODS = ("binvox-win", "binvox", "surface")
DEFAULT_METHOD = "binvox-win"
MESH_SUFFIXES = (".off", ".obj", ".stl", ".ply")
_CHUNK = 1 << 20  # (triangle, cell) pairs tested at a time in surface mode


class Mesh(NamedTuple):
    """A triangle mesh: float64 ``vertices`` (V, 3) and int64 ``faces`` (F, 3)."""

    vertices: np.ndarray
    faces: np.ndarray


class Placement(NamedTuple):
    """How mesh coordinates map to grid coordinates: ``g = (p - origin) * scale + offset``."""

    origin: np.ndarray   # bounding-box minimum (3,)
    scale: float         # dim / longest side
    offset: np.ndarray   # (3,) zero, or the centring shift with center=True
    dim: int

    def binvox_header(self) -> tuple[tuple[float, float, float], float]:
        """``(translate, scale)`` as binvox writes them in a ``.binvox`` header: the
        bounding-box minimum and the longest side (binvox writes these with ``-cb`` too)."""
        return tuple(float(t) for t in self.origin), float(self.dim / self.scale)


# ------------------------------------------------------------------ reading


def read_mesh(path: str | os.PathLike) -> Mesh:
    """Read a mesh file (``.off`` natively; ``.obj``/``.stl``/``.ply`` through trimesh).

    Raises :class:`DataError` naming the file for anything unusable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".off":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read mesh file ({exc.strerror or exc})") from exc
        mesh = parse_off(data, str(path))
    elif suffix in MESH_SUFFIXES:
        mesh = _read_with_trimesh(path)
    else:
        raise DataError(f"{path}: unknown mesh type '{path.suffix}'; use {', '.join(MESH_SUFFIXES)}")
    check_mesh(mesh, str(path))
    return mesh


def _read_with_trimesh(path: Path) -> Mesh:
    try:
        import trimesh
    except ImportError:
        raise DataError(f"{path}: reading {path.suffix} meshes needs the optional package trimesh "
                        "(pip install trimesh); .off files are read without it") from None
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
        vertices = np.asarray(loaded.vertices, dtype=np.float64)
        faces = np.asarray(loaded.faces, dtype=np.int64).reshape(-1, 3)
    except Exception as exc:  # trimesh raises many kinds of errors
        raise DataError(" ".join(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})".split())) from exc
    return Mesh(vertices, faces)


def _numbers(text: bytes, count: int | None, name: str, what: str) -> np.ndarray:
    """Parse whitespace-separated numbers; check the count when given."""
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise DataError(f"{name}: bad number in the {what} of the OFF file") from None
    if count is not None and values.size != count:
        raise DataError(f"{name}: OFF {what} hold {values.size} numbers, expected {count}")
    return values


def parse_off(data: bytes, name: str = "<off>") -> Mesh:
    """Parse the bytes of an OFF file into a triangle :class:`Mesh`.

    Accepts the glued header of some ModelNet files (``OFF490 518 0``), ``#`` comments,
    blank lines, CRLF line ends, extra whitespace, extra per-vertex / per-face values
    (colours) and polygon faces (fan-triangulated). Raises :class:`DataError` naming
    ``name`` for bad counts, out-of-range indices or non-numeric values.
    """
    if b"#" in data:
        data = b"\n".join(line.split(b"#", 1)[0] for line in data.splitlines())
    lines = list(filter(None, map(bytes.strip, data.splitlines())))
    if not lines:
        raise DataError(f"{name}: empty OFF file")
    first = lines[0].split()
    if not first or not first[0].upper().startswith(b"OFF"):
        raise DataError(f"{name}: not an OFF file (it does not start with 'OFF')")
    if first[0][3:]:  # glued header: 'OFF490 518 0'
        if first[0][:3].upper() != b"OFF" or not first[0][3:].isdigit():
            raise DataError(f"{name}: not an OFF file (first word {first[0][:20].decode('latin-1')!r})")
        counts = [first[0][3:]] + first[1:]
        body = lines[1:]
    elif len(first) > 1:  # 'OFF nv nf ne' on one line
        counts, body = first[1:], lines[1:]
    else:
        if len(lines) < 2:
            raise DataError(f"{name}: OFF file has no vertex/face counts")
        counts, body = lines[1].split(), lines[2:]
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        raise DataError(f"{name}: bad OFF counts line (need 'vertices faces edges')") from None
    if nv < 3 or nf < 1:
        raise DataError(f"{name}: OFF file has {nv} vertices and {nf} faces; a mesh needs >= 3 and >= 1")
    if len(body) < nv + nf:
        raise DataError(f"{name}: OFF file is truncated: {len(body)} data lines for {nv} vertices + {nf} faces")
    vertex_lines, face_lines = body[:nv], body[nv:nv + nf]

    values = _numbers(b" ".join(vertex_lines), None, name, "vertices")
    if values.size == 3 * nv:
        vertices = values.reshape(nv, 3)
    else:  # extra values (normals / colours) on some vertex lines
        rows = [line.split() for line in vertex_lines]
        if min(len(r) for r in rows) < 3:
            raise DataError(f"{name}: an OFF vertex line has fewer than 3 coordinates")
        vertices = _numbers(b" ".join(b" ".join(r[:3]) for r in rows), 3 * nv, name, "vertices").reshape(nv, 3)

    faces = _parse_faces(face_lines, nf, name)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        bad = int(faces.max()) if faces.max() >= nv else int(faces.min())
        raise DataError(f"{name}: OFF face uses vertex index {bad}, but there are {nv} vertices (0..{nv - 1})")
    return Mesh(vertices, faces)


def _parse_faces(face_lines: list[bytes], nf: int, name: str) -> np.ndarray:
    values = _numbers(b" ".join(face_lines), None, name, "faces")
    if values.size == 4 * nf:
        table = values.reshape(nf, 4)
        if np.all(table[:, 0] == 3):
            return _as_indices(table[:, 1:], name)
    triangles = []
    for line in face_lines:
        words = line.split()
        try:
            n = int(words[0])
            idx = [int(w) for w in words[1:n + 1]]
        except ValueError:
            raise DataError(f"{name}: bad OFF face line {line[:40].decode('latin-1')!r}") from None
        if n < 3 or len(idx) != n:
            raise DataError(f"{name}: bad OFF face line {line[:40].decode('latin-1')!r} "
                            f"(a face needs a count >= 3 and that many vertex indices)")
        triangles.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, n - 1))
    return np.asarray(triangles, dtype=np.int64).reshape(-1, 3)


def _as_indices(values: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(f"{name}: OFF face has a vertex index that is not an integer")
    return values.astype(np.int64)


def check_mesh(mesh: Mesh, name: str) -> None:
    """Raise :class:`DataError` for a mesh that cannot be voxelized."""
    v, f = mesh
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise DataError(f"{name}: mesh has no vertices")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise DataError(f"{name}: mesh has no faces")
    if f.min() < 0 or f.max() >= len(v):
        raise DataError(f"{name}: mesh face uses vertex index {int(f.max())}, but there are {len(v)} vertices")
    if not np.all(np.isfinite(v)):
        raise DataError(f"{name}: mesh has non-finite (NaN or infinite) vertex coordinates")
    if not (v.max(axis=0) - v.min(axis=0)).max() > 0:
        raise DataError(f"{name}: mesh bounding box is degenerate (all vertices at one point)")


# ---------------------------------------------------------------- placement


def placement(mesh: Mesh, dim: int, center: bool = False) -> Placement:
    """The binvox placement of ``mesh`` in a ``dim``-cell grid.

    As binvox, the bounding box is that of all vertices, including any no face uses.
    """
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    extent = hi - lo
    scale = dim / float(extent.max())
    offset = (dim - extent * scale) / 2.0 if center else np.zeros(3)
    return Placement(lo, scale, offset, dim)


def grid_triangles(mesh: Mesh, place: Placement) -> np.ndarray:
    """Triangles ``(F, 3 corners, 3 xyz)`` in grid coordinates."""
    verts = (mesh.vertices - place.origin) * place.scale + place.offset
    return verts[mesh.faces]


# ------------------------------------------------------------------ solids


def _ray_hits(tris: np.ndarray, axis: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Intersect the rays along ``axis`` through all cell-centre columns with the triangles.

    Returns ``(ray, depth)``: ray index ``i * dim + j`` over the two other axes (in
    increasing axis order) and the hit coordinate along ``axis``.
    """
    u_ax, v_ax = [a for a in range(3) if a != axis]
    pu, pv, pd = tris[:, :, u_ax], tris[:, :, v_ax], tris[:, :, axis]
    area = (pu[:, 1] - pu[:, 0]) * (pv[:, 2] - pv[:, 0]) - (pu[:, 2] - pu[:, 0]) * (pv[:, 1] - pv[:, 0])
    # cell-centre rows/columns inside each triangle's projected bounding box
    i0 = np.maximum(np.ceil(pu.min(axis=1) - 0.5), 0).astype(np.int64)
    i1 = np.minimum(np.floor(pu.max(axis=1) - 0.5), dim - 1).astype(np.int64)
    j0 = np.maximum(np.ceil(pv.min(axis=1) - 0.5), 0).astype(np.int64)
    j1 = np.minimum(np.floor(pv.max(axis=1) - 0.5), dim - 1).astype(np.int64)
    ni, nj = i1 - i0 + 1, j1 - j0 + 1
    keep = np.flatnonzero((area != 0) & (ni > 0) & (nj > 0))
    if keep.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    flip = area[keep] < 0  # orient every projected triangle counter-clockwise
    u = pu[keep].copy()
    v = pv[keep].copy()
    d = pd[keep].copy()
    for arr in (u, v, d):
        arr[flip, 1], arr[flip, 2] = arr[flip, 2], arr[flip, 1].copy()
    area_k = np.abs(area[keep])
    ni, i0, j0, j1 = ni[keep], i0[keep], j0[keep], j1[keep]
    # edge a -> b as a linear function w = A*u + B*v + C of the point (u, v); w > 0 inside.
    # Points exactly on an edge belong to it only for one of its two directions, so an edge
    # shared by two triangles is counted once.
    coef = np.empty((len(keep), 3, 3))
    owns = np.empty((len(keep), 3), dtype=bool)
    for e, (a, b) in enumerate(((1, 2), (2, 0), (0, 1))):
        du, dv = u[:, b] - u[:, a], v[:, b] - v[:, a]
        coef[:, e, 0], coef[:, e, 1], coef[:, e, 2] = -dv, du, dv * u[:, a] - du * v[:, a]
        owns[:, e] = (dv > 0) | ((dv == 0) & (du < 0))
    # depth on the triangle's plane as a linear function of (u, v): barycentric weights
    # are w_e / area for the corner opposite edge e
    depth_coef = np.einsum("tec,te->tc", coef, d) / area_k[:, None]
    # scanlines: one row per (triangle, cell-centre row u = i + 0.5 it spans)
    rt = np.repeat(np.arange(len(keep)), ni)
    gi = np.repeat(i0, ni) + (np.arange(rt.size) - np.repeat(np.cumsum(ni) - ni, ni))
    qu = gi + 0.5
    # on a row each edge test is w = P + B * v; it bounds v from one side. The bounds are
    # widened by one cell and the exact edge tests below decide.
    lo, hi = j0[rt] + 0.5, j1[rt] + 0.5
    alive = np.ones(rt.size, dtype=bool)
    row_p, row_b = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for e in range(3):
            p_e = coef[rt, e, 0] * qu + coef[rt, e, 2]
            b_e = coef[rt, e, 1]
            bound = -p_e / b_e
            lo = np.where(b_e > 0, np.maximum(lo, bound), lo)
            hi = np.where(b_e < 0, np.minimum(hi, bound), hi)
            alive &= (b_e != 0) | (p_e > 0) | ((p_e == 0) & owns[rt, e])
            row_p.append(p_e)
            row_b.append(b_e)
        jlo = np.maximum(j0[rt], np.nan_to_num(np.ceil(lo - 0.5), nan=0.0, posinf=dim, neginf=0).astype(np.int64) - 1)
        jhi = np.minimum(j1[rt], np.nan_to_num(np.floor(hi - 0.5), nan=-1.0, posinf=dim, neginf=-1).astype(np.int64) + 1)
    n = np.where(alive, np.maximum(jhi - jlo + 1, 0), 0)
    # candidate cell centres of each row, exact edge tests
    cand_row = np.repeat(np.arange(rt.size), n)
    gj = np.repeat(jlo, n) + (np.arange(cand_row.size) - np.repeat(np.cumsum(n) - n, n))
    qv = gj + 0.5
    inside = None
    for e in range(3):
        w = np.repeat(row_p[e], n) + np.repeat(row_b[e], n) * qv
        ok = (w > 0) | ((w == 0) & np.repeat(owns[rt, e], n))
        inside = ok if inside is None else inside & ok
    idx = np.flatnonzero(inside)
    r = cand_row[idx]
    t = rt[r]
    depth = depth_coef[t, 0] * qu[r] + depth_coef[t, 1] * qv[idx] + depth_coef[t, 2]
    return gi[r] * dim + gj[idx], depth


def _axis_codes(tris: np.ndarray, axis: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Carving and parity votes of the two views along ``axis``, for the rays with hits.

    Returns ``(rays, codes)``: the ray indices ``i * dim + j`` that hit the surface and, per
    ray and cell ``k`` along ``axis``, ``codes = 8 * carved + votes`` (uint8 ``(n, dim)``):
    ``carved`` is 1 between the first and the last hit; ``votes`` (0-2) counts the two
    views that see an odd number of crossings between their side and the cell centre.
    Rays without hits carve everything away and give no votes.
    """
    ray, depth = _ray_hits(tris, axis, dim)
    if ray.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.uint8)
    # a hit at depth t is below the centre k + 0.5 of cell k iff k >= floor(t - 0.5) + 1
    k = np.clip(np.floor(depth - 0.5).astype(np.int64) + 1, 0, dim)
    present = np.bincount(ray, minlength=dim * dim) > 0
    rays = np.flatnonzero(present)
    row = (np.cumsum(present) - 1)[ray]
    hist = np.bincount(row * (dim + 1) + k, minlength=rays.size * (dim + 1)).reshape(rays.size, dim + 1)
    has = hist > 0
    first = np.argmax(has, axis=1)              # cells k >= first have a hit below
    last = dim - np.argmax(has[:, ::-1], axis=1)  # cells k < last have a hit above
    cells = np.arange(dim)
    carved = (cells >= first[:, None]) & (cells < last[:, None])
    below = np.cumsum(hist, axis=1, dtype=np.uint8)[:, :dim] & 1  # parity survives uint8 wrap-around
    odd = (np.bincount(row, minlength=rays.size) & 1).astype(np.uint8)
    codes = below + (below ^ odd[:, None])  # below-side vote + above-side vote
    codes |= carved.view(np.uint8) << 3
    return rays, codes


def solid_xyz(tris: np.ndarray, dim: int) -> np.ndarray:
    """binvox's default method (carving OR parity voting) as a bool ``[x][y][z]`` grid."""
    total = np.zeros((dim, dim, dim), dtype=np.uint8)  # sum over the 3 axes of 8 * carved + votes
    for axis in range(3):
        rays, codes = _axis_codes(tris, axis, dim)
        view = np.moveaxis(total, axis, 2)  # [i, j, k] with k along the rays
        view[rays // dim, rays % dim] += codes
    return (total >= 24) | ((total & 7) >= 3)


def _or_pool(grid: np.ndarray) -> np.ndarray:
    """OR-pool a bool ``(2d, 2d, 2d)`` grid over 2x2x2 blocks to ``(d, d, d)``."""
    grid = grid[0::2] | grid[1::2]
    grid = grid[:, 0::2] | grid[:, 1::2]
    return grid[:, :, 0::2] | grid[:, :, 1::2]


# ----------------------------------------------------------------- surface


# binvox -e, as measured on its output (104 ModelNet10 meshes, -d 32 -cb, 370,000 candidate
# cells; every one of them is reproduced): the cells tried for a triangle are its voxel-index
# bounding box, floor(min) .. floor(max) on each axis, clamped to the grid (so cell c holds
# [c, c+1): a triangle lying in the plane x = c is tried for cell c only, and one on the
# grid's far face x = dim for cell dim - 1); each is kept if Akenine-Moeller's
# separating-axis triangle/box test passes for the box of half side 0.51 around its centre.
# The half side is not a fitted tolerance: over those cells, the least half side that puts a
# triangle on a cell is <= 0.509997 for every cell binvox sets and >= 0.510010 for every
# cell it leaves empty (the 46 chairs alone and the 58 other meshes alone bracket it the
# same way). 0.5 plus a rounding epsilon would miss 2,664 set cells that need 0.500-0.510.
SURFACE_SAT_HALF_SIDE = 0.51


def surface_cell_ranges(tris: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The cells binvox ``-e`` tries for each triangle: ``(lo, hi)`` index arrays ``(F, 3)``,
    ``floor`` of the triangle's bounding box clamped to ``0 .. dim - 1`` (inclusive)."""
    lo = np.clip(np.floor(tris.min(axis=1)), 0, dim - 1).astype(np.int64)
    hi = np.clip(np.floor(tris.max(axis=1)), 0, dim - 1).astype(np.int64)
    return lo, hi


def surface_xyz(tris: np.ndarray, dim: int) -> np.ndarray:
    """binvox ``-e``: every cell of a triangle's clamped index range (:func:`surface_cell_ranges`)
    whose box of half side :data:`SURFACE_SAT_HALF_SIDE` the triangle touches, as a bool
    ``[x][y][z]`` grid (a hollow shell)."""
    grid = np.zeros((dim, dim, dim), dtype=bool)
    lo, hi = surface_cell_ranges(tris, dim)
    n = hi - lo + 1
    counts = n[:, 0] * n[:, 1] * n[:, 2]
    ends = np.cumsum(counts)
    start = 0
    while start < len(tris):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK, side="right")), start + 1)
        c = counts[start:stop]
        tri = np.repeat(np.arange(start, stop), c)
        first = np.cumsum(c) - c
        local = np.arange(int(c.sum())) - np.repeat(first, c)
        ny, nz = n[tri, 1], n[tri, 2]
        cell = np.stack([lo[tri, 0] + local // (ny * nz), lo[tri, 1] + (local // nz) % ny, lo[tri, 2] + local % nz], 1)
        hit = _tri_box_overlap(tris[tri] - (cell + 0.5)[:, None, :], SURFACE_SAT_HALF_SIDE)
        cells = cell[hit]
        grid[cells[:, 0], cells[:, 1], cells[:, 2]] = True
        start = stop
    return grid


def _tri_box_overlap(tri: np.ndarray, half: float) -> np.ndarray:
    """Akenine-Moeller's separating-axis test of triangles ``(n, 3, 3)`` (box-centred) against
    the closed box ``[-half, half]^3`` (the 3 box axes, the triangle normal, the 9 edge
    crosses); True where they touch."""
    v0, v1, v2 = tri[:, 0], tri[:, 1], tri[:, 2]
    ok = np.all(tri.min(axis=1) <= half, axis=1) & np.all(tri.max(axis=1) >= -half, axis=1)
    e = (v1 - v0, v2 - v1, v0 - v2)
    normal = np.cross(e[0], e[1])
    radius = half * np.abs(normal).sum(axis=1)
    dist = np.einsum("ij,ij->i", normal, v0)
    ok &= np.abs(dist) <= radius
    for edge in e:
        for a in range(3):
            axis_vec = np.zeros(3)
            axis_vec[a] = 1.0
            ax = np.cross(axis_vec, edge)  # (n, 3)
            p = np.stack([np.einsum("ij,ij->i", ax, v) for v in (v0, v1, v2)], 1)
            r = half * np.abs(ax).sum(axis=1)
            ok &= (p.min(axis=1) <= r) & (p.max(axis=1) >= -r)
    return ok


# ------------------------------------------------------------------- public


def voxelize_mesh(mesh: Mesh, dim: int = 64, method: str = DEFAULT_METHOD, center: bool = False) -> np.ndarray:
    """Voxelize ``mesh`` into a uint8 0/1 ``(dim, dim, dim)`` grid in binvox order ``[x][z][y]``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if method == "binvox-win":
        fine = 2 * dim
        tris = grid_triangles(mesh, placement(mesh, fine, center))
        grid = _or_pool(solid_xyz(tris, fine))
    else:
        tris = grid_triangles(mesh, placement(mesh, dim, center))
        grid = solid_xyz(tris, dim) if method == "binvox" else surface_xyz(tris, dim)
    return np.ascontiguousarray(grid.transpose(0, 2, 1)).view(np.uint8)


def voxelize_file(path: str | os.PathLike, dim: int = 64, method: str = DEFAULT_METHOD,
                  center: bool = False) -> tuple[np.ndarray, Placement]:
    """Read and voxelize one mesh file; returns the grid and its :class:`Placement`."""
    mesh = read_mesh(path)
    return voxelize_mesh(mesh, dim, method, center), placement(mesh, dim, center)


def iou(a, b) -> float:
    """Intersection over union of two voxel grids (1.0 when both are empty)."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


# ------------------------------------------------------------ batch convert


OUTPUT_FORMATS = ("raw", "binvox", "npy")
DEFAULT_TIMEOUT = 300.0


class ConvertOptions(NamedTuple):
    """Settings of :func:`convert_tree` (and of ``tools/convert_data.py``)."""

    dim: int = 64
    method: str = DEFAULT_METHOD
    center: bool = False
    format: str = "raw"
    binvox_binary: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    force: bool = False

    def describe(self) -> str:
        """How the grids are made, as stored in the dataset cache (``method`` key)."""
        if self.binvox_binary:
            extra = " -e" if self.method == "surface" else ""
            return f"binvox binary -d {self.dim}{extra}{' -cb' if self.center else ''}"
        return f"{self.method}{' center' if self.center else ''}"


class ConvertResult(NamedTuple):
    """The outcome of converting one mesh file: status ``converted``, ``skipped`` or ``failed``."""

    mesh: str
    output: str
    status: str
    message: str = ""


class ConvertSummary(NamedTuple):
    results: list
    caches: list          # cache files written
    cache_warnings: list  # one line per folder whose cache could not be written
    not_meshes: tuple = ()  # one line per entry named like a mesh that is not a mesh file (a folder)
    skipped_sides: tuple = ()  # grid sides of the outputs that were already there (skipped)
    seconds: float = 0.0       # set by convert_meshes
    dim: int = 64              # the grid side asked for (set by convert_meshes)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def describe(self) -> str:
        """The closing lines of ``tools/convert_data.py``: the caches written (if any), then the counts."""
        converted, skipped, failed = (self.count(s) for s in ("converted", "skipped", "failed"))
        lines = [f"wrote {len(self.caches)} dataset cache(s) ({self.caches[0].name})"] if self.caches else []
        rate = f", {converted / self.seconds:.1f} meshes/s" if converted and self.seconds > 0 else ""
        notes = ""
        if skipped:
            sides = " / ".join(f"{d}³" for d in self.skipped_sides) or f"{self.dim}³"
            notes += f"; skipped: their {sides} outputs exist (--force reconverts them)"
        if self.not_meshes:
            n = len(self.not_meshes)
            notes += (f"; {n} {'entry' if n == 1 else 'entries'} named like a mesh {'is' if n == 1 else 'are'} "
                      f"not a mesh file (warning{'' if n == 1 else 's'} above)")
        lines.append(f"converted {converted}, skipped {skipped}, failed {failed} of {len(self.results)} mesh files "
                     f"in {self.seconds:.1f} s{rate}{notes}")
        return "\n".join(lines)


def output_path(mesh_path: str | os.PathLike, fmt: str = "raw") -> Path:
    """Where the grid of ``mesh_path`` goes: beside it, ``X.off`` -> ``X.<fmt>``."""
    return Path(mesh_path).with_suffix("." + fmt)


def find_meshes(folder: str | os.PathLike, report=None) -> list[Path]:
    """Mesh files (:data:`MESH_SUFFIXES`) under ``folder``, recursively, sorted; hidden ones skipped.

    An entry named like a mesh that is not a regular file (a folder ``x.off``, a FIFO) is
    not returned: ``report(line)`` is called once for each (a folder's contents are still
    searched).
    """
    found = []
    for root, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        odd = [(d, "a folder") for d in dirnames if Path(d).suffix.lower() in MESH_SUFFIXES]
        for f in filenames:
            if f.startswith(".") or Path(f).suffix.lower() not in MESH_SUFFIXES:
                continue
            path = Path(root, f)
            if path.is_file() or not path.exists():  # a broken link fails later, with its name
                found.append(path)
            else:
                odd.append((f, "not a regular file"))
        if report is not None:
            for name, what in sorted(odd):
                inside = " (meshes inside it are)" if what == "a folder" else ""
                report(f"warning: {Path(root, name)} is {what}, not a mesh file: not voxelized{inside}")
    return sorted(found)


def write_grid(path: str | os.PathLike, grid: np.ndarray, place: Placement | None = None) -> None:
    """Atomically write a ``[x][z][y]`` grid as ``.raw``, ``.binvox`` or ``.npy`` (by suffix)."""
    from tf3dgan.atomic import atomic_path
    from tf3dgan.data import binvox

    suffix = Path(path).suffix.lower()
    if suffix == ".raw":
        binvox.write_raw(path, grid)
    elif suffix == ".binvox":
        translate, scale = place.binvox_header() if place is not None else ((0.0, 0.0, 0.0), 1.0)
        binvox.write_binvox(path, grid, translate, scale)
    elif suffix == ".npy":
        with atomic_path(path) as tmp:
            np.save(tmp, (np.asarray(grid) != 0).view(np.uint8))
    else:
        raise ValueError(f"unknown voxel output type {suffix!r}")


def run_binvox_binary(binary: str, mesh_path: str | os.PathLike, dim: int = 64, method: str = DEFAULT_METHOD,
                      center: bool = False, timeout: float = DEFAULT_TIMEOUT) -> np.ndarray:
    """Voxelize with an external ``binvox`` program, called as the original converter did:
    ``[binary, "-d", dim, "-t", "raw", mesh]`` (plus ``-e`` for ``surface``, ``-cb`` for ``center``).

    binvox writes its output beside the mesh and never overwrites, so it runs on a copy of
    the mesh in a temporary folder; the ``.raw`` it writes there is read back and checked.
    """
    import shutil
    import subprocess
    import tempfile

    from tf3dgan.data import binvox

    mesh_path = Path(mesh_path)
    with tempfile.TemporaryDirectory(prefix=".tf3dgan-binvox-", dir=mesh_path.parent) as tmp:
        copy = Path(tmp) / mesh_path.name
        shutil.copyfile(mesh_path, copy)
        cmd = [binary, "-d", str(dim), "-t", "raw"]
        cmd += ["-e"] if method == "surface" else []
        cmd += ["-cb"] if center else []
        cmd.append(str(copy))
        try:
            proc = subprocess.run(cmd, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DataError(f"{mesh_path}: {binary} did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise DataError(f"{mesh_path}: cannot run {binary} ({exc.strerror or exc})") from None
        raw = copy.with_suffix(".raw")
        if proc.returncode != 0 or not raw.is_file():
            tail = " ".join((proc.stderr or proc.stdout).decode("utf-8", "replace").split())[-200:]
            raise DataError(f"{mesh_path}: {binary} failed (exit status {proc.returncode}, no .raw written)"
                            + (f": {tail}" if tail else ""))
        grid = binvox.read_raw(raw)
        if grid.shape[0] != dim:
            raise DataError(f"{mesh_path}: {binary} wrote a {grid.shape[0]}^3 grid, expected {dim}^3")
        return grid


def grid_side(path: str | os.PathLike) -> int | None:
    """The side of the voxel grid(s) in a voxel file, read cheaply (``.raw``: its size;
    ``.binvox`` / ``.npy``: the header; ``.npz``: loaded), or None if it cannot be read."""
    from tf3dgan.data import binvox
    from tf3dgan.data import datasets as data

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".raw":
            return binvox.cube_side(path.stat().st_size)
        if suffix == ".binvox":
            return binvox.read_binvox_header(path).dim
        if suffix == ".npy":
            return int(data.as_batch(np.load(path, mmap_mode="r", allow_pickle=False), str(path)).shape[1])
        return data.load_dataset(str(path)).dim
    except Exception:
        return None


class ExistingOutputs(NamedTuple):
    """What :func:`check_existing_outputs` found beside the meshes of one run."""

    same: list       # (output path, side) of outputs this run would skip (same side and method)
    differ: list     # (output path, reason) of outputs of another side / method, or unreadable
    others: list     # (voxel file, side) beside the meshes, not outputs of this run, of another side
    meshes: int = 0  # meshes checked


def _cache_methods(folder: Path) -> dict[str, str]:
    """stem -> ``method`` noted in ``folder``'s dataset cache (empty if none or no note)."""
    from tf3dgan.data import datasets as data

    cache = folder / data.CACHE_NAME
    if not cache.is_file():
        return {}
    try:
        with np.load(cache, allow_pickle=False) as z:
            if "method" not in z.files:
                return {}
            method = str(z["method"])
            return {str(name): method for name in z["names"].tolist()}
    except Exception:
        return {}


def check_existing_outputs(meshes: list[Path], options: ConvertOptions) -> ExistingOutputs:
    """Compare the voxel files already beside ``meshes`` with what this run would write.

    An existing output (``X.<format>``) *differs* when its grid side is not ``options.dim``,
    when the folder's dataset cache notes another method for it (``method`` key, see
    :meth:`ConvertOptions.describe`), or when it cannot be read. Any other voxel file in or
    below a folder of meshes (another format, a foreign file: what that folder's dataset cache
    holds) whose side is not ``options.dim`` is listed in ``others``: this run would not
    replace it, so the folder would mix sizes.
    """
    from tf3dgan.data import datasets as data

    same, differ, others = [], [], []
    method = options.describe()
    by_folder: dict[Path, list[Path]] = {}
    for mesh in meshes:
        by_folder.setdefault(Path(mesh).parent, []).append(Path(mesh))
    all_targets = {output_path(m, options.format) for m in meshes}
    seen: set[Path] = set()
    for folder, folder_meshes in sorted(by_folder.items()):
        targets = {output_path(m, options.format) for m in folder_meshes}
        methods = _cache_methods(folder)
        for out in sorted(targets):
            if not out.exists():
                continue
            side = grid_side(out)
            old = methods.get(out.name[: -len(out.suffix)])
            if side is None:
                differ.append((out, "unreadable"))
            elif side != options.dim:
                differ.append((out, f"{side}³"))
            elif old is not None and old != method:
                differ.append((out, f"made with {old}"))
            else:
                same.append((out, side))
        for f in data.voxel_files(folder):  # what the folder's dataset cache would hold
            if f not in all_targets and f not in seen:
                seen.add(f)
                side = grid_side(f)
                if side is not None and side != options.dim:
                    others.append((f, side))
    return ExistingOutputs(same, differ, others, len(meshes))


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def refusal(found: ExistingOutputs, options: ConvertOptions, folder: Path) -> str | None:
    """The one-line reason :func:`convert_tree` refuses to start, or None: outputs that differ
    (unless ``options.force``) and voxel files it would leave beside grids of another side."""
    from tf3dgan.data import datasets as data

    dim = options.dim
    if found.others:
        sides = sorted({side for _, side in found.others})
        example = found.others[0][0]
        fmt = example.suffix.lower().lstrip(".")
        sibling = fmt in OUTPUT_FORMATS and fmt != options.format and any(
            (example.parent / (example.name[: -len(example.suffix)] + ext)).exists() for ext in MESH_SUFFIXES)
        hint = f" or convert with --format {fmt}" if sibling else ""
        return (f"{folder}: {_count(len(found.others), 'other voxel file')} in the folders of the meshes "
                f"{'holds' if len(found.others) == 1 else 'hold'} {' and '.join(f'{s}³' for s in sides)} grids "
                f"(e.g. {example}) that this run would not replace, so the folders would mix them with {dim}³ "
                f"grids (the training loader refuses mixed sizes); nothing was converted: move them away{hint}")
    if not found.differ or options.force:
        return None
    existing = len(found.same) + len(found.differ)
    reasons: dict[str, int] = {}
    for _, why in found.differ:
        reasons[why] = reasons.get(why, 0) + 1
    parts = []
    for why, n in reasons.items():
        verb = "is" if n == 1 else "are"
        if why == "unreadable":
            parts.append(f"{n} {verb} unreadable")
        elif why.startswith("made with"):
            parts.append(f"{n} {'was' if n == 1 else 'were'} {why} (the folder's {data.CACHE_NAME} says), "
                         f"not {options.describe()}")
        else:
            parts.append(f"{n} {verb} {why}, not {dim}³")
    line = (f"{folder}: {len(found.differ)} of {_count(existing, 'existing voxel output')} "
            f"{'differs' if len(found.differ) == 1 else 'differ'} from this run "
            f"({'; '.join(parts)}; e.g. {found.differ[0][0]}); nothing was converted: --force replaces them "
            f"(it reconverts all {_count(found.meshes, 'mesh', 'meshes')})")
    for side in sorted({int(why[:-1]) for _, why in found.differ if why.endswith("³")}):
        try:
            if side > dim and data.pool_factor(side, dim) > 1:
                return (line + f", or keep the {side}³ grids and train at {dim}³: tools/train.py --resolution {dim} "
                        "pools them down")
        except Tf3dganError:  # not a power-of-two step down: no pooling hint
            pass
    return line


def convert_file(mesh_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Convert one mesh to a voxel file beside it; never raises for a bad file (status ``failed``).

    An existing output is kept (status ``skipped``) only if it holds a grid of ``options.dim``;
    one of another side (or unreadable) is ``failed`` unless ``options.force`` replaces it.
    """
    out = output_path(mesh_path, options.format)
    if out.exists() and not options.force:
        side = grid_side(out)
        if side == options.dim:
            return ConvertResult(str(mesh_path), str(out), "skipped")
        held = "cannot be read" if side is None else f"holds a {side}³ grid, not {options.dim}³"
        return ConvertResult(str(mesh_path), str(out), "failed",
                             f"{out}: exists and {held}; --force (force=True) replaces it")
    try:
        if options.binvox_binary:
            grid = run_binvox_binary(options.binvox_binary, mesh_path, options.dim, options.method,
                                     options.center, options.timeout)
            place = None
            if options.format == "binvox":
                place = placement(read_mesh(mesh_path), options.dim, options.center)
        else:
            grid, place = voxelize_file(mesh_path, options.dim, options.method, options.center)
        write_grid(out, grid, place)
    except DataError as exc:
        return ConvertResult(str(mesh_path), str(out), "failed", str(exc))
    except Exception as exc:
        message = " ".join(f"{mesh_path}: {type(exc).__name__}: {exc}".split())
        return ConvertResult(str(mesh_path), str(out), "failed", message)
    return ConvertResult(str(mesh_path), str(out), "converted")


def _convert_star(args) -> ConvertResult:
    return convert_file(*args)


def convert_tree(folder: str | os.PathLike, options: ConvertOptions = ConvertOptions(), jobs: int | None = None,
                 progress: bool | None = None, write_caches: bool = True, report=print) -> ConvertSummary:
    """Convert every mesh under ``folder`` (see :func:`convert_file`), ``jobs`` processes at once
    (default: all cores), then write the dataset cache of each folder that holds meshes.

    Before any work, a :class:`DataError` (one line, naming the count and ``--force``) refuses a
    run that would skip outputs of another grid side or method (unless ``options.force``) or
    leave voxel files of another side beside the meshes: a folder never ends up mixing grid
    sizes. ``report(line)`` is called for every failed file (the line names it), every entry
    named like a mesh that is not a file, and every cache problem.
    """
    from tqdm import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"model folder '{folder}' does not exist" if not folder.exists()
                        else f"'{folder}' is not a folder; give -m the folder holding the meshes")
    not_meshes: list[str] = []
    meshes = find_meshes(folder, report=lambda line: (not_meshes.append(line), report(line)))
    if not meshes:
        n = len(not_meshes)
        also = f" ({_count(n, 'entry', 'entries')} named like one {'is' if n == 1 else 'are'} not a file)" if n else ""
        raise DataError(f"model folder '{folder}' has no mesh files ({', '.join(MESH_SUFFIXES)}){also}")
    found = check_existing_outputs(meshes, options)
    line = refusal(found, options, folder)
    if line:
        raise DataError(line)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(meshes)))
    results: list[ConvertResult] = []
    bar = tqdm(total=len(meshes), unit="mesh", desc="voxelizing", disable=(None if progress is None else not progress))

    def note(result: ConvertResult) -> None:
        results.append(result)
        if result.status == "failed":
            (bar.write if not bar.disable else report)(f"failed: {result.message}")
        bar.update(1)

    try:
        if jobs == 1:
            for mesh in meshes:
                note(convert_file(mesh, options))
        else:
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            try:
                with ProcessPoolExecutor(max_workers=jobs) as pool:
                    for result in pool.map(_convert_star, [(m, options) for m in meshes], chunksize=2):
                        note(result)
            except BrokenProcessPool:
                raise DataError(f"{folder}: a voxelizer process died (out of memory?) after {len(results)} of "
                                f"{len(meshes)} files; the files written are complete: rerun with fewer -j") from None
    finally:
        bar.close()
    caches, warnings_ = [], []
    if write_caches:
        for mesh_dir in sorted({Path(r.mesh).parent for r in results}):
            mine = [r for r in results if Path(r.mesh).parent == mesh_dir]
            line, path = update_cache(mesh_dir, options, sum(r.status == "converted" for r in mine), len(mine))
            if path is not None:
                caches.append(path)
            if line:
                warnings_.append(line)
                report(line)
    skipped_sides = () if options.force else tuple(sorted({side for _, side in found.same}))
    return ConvertSummary(results, caches, warnings_, tuple(not_meshes), skipped_sides)


def convert_meshes(model_dir: str | os.PathLike, options: ConvertOptions = ConvertOptions(), *, jobs: int | None = None,
                   progress: bool | None = None, write_caches: bool = True, report=print) -> ConvertSummary:
    """What ``tools/convert_data.py`` does: check the settings, then :func:`convert_tree`; the summary carries
    the time it took (and :meth:`ConvertSummary.describe` says it)."""
    import time

    if options.dim < 1:
        raise Tf3dganError(f"--dim must be >= 1, got {options.dim}")
    if jobs is not None and jobs < 1:
        raise Tf3dganError(f"-j/--jobs must be >= 1, got {jobs}")
    if options.timeout <= 0:
        raise Tf3dganError(f"--timeout must be > 0, got {options.timeout}")
    start = time.perf_counter()
    summary = convert_tree(model_dir, options, jobs=jobs, progress=progress, write_caches=write_caches, report=report)
    return summary._replace(seconds=time.perf_counter() - start, dim=options.dim)


def update_cache(folder: Path, options: ConvertOptions, converted: int = 1, meshes: int = 1) -> tuple[str, Path | None]:
    """(Re)write ``folder``'s dataset cache from its voxel files when this run ``converted``
    some of its ``meshes`` or when the cache is missing or does not list the folder's voxel
    files. The cache notes ``options.describe()`` as its method when every grid is known to
    be made that way (all converted now, or the old cache said so), else no method.
    Returns ``(problem line or '', cache path or None)``.
    """
    from tf3dgan.data import datasets as data

    files = data.voxel_files(folder)
    if not files:
        return "", None
    cache = folder / data.CACHE_NAME
    old_method = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                same_names = sorted(z["names"].tolist()) == sorted(f.name[: -len(f.suffix)] for f in files)
                old_method = str(z["method"]) if "method" in z.files else None
        except Exception:
            same_names = False
        if same_names and not converted:
            return "", None
    method = options.describe()
    if converted < meshes and old_method != method:
        method = None
    try:
        dataset = data.load_dataset([str(f) for f in files])
    except DataError as exc:
        return f"warning: {cache} not written: {exc}", None
    return "", data.write_cache(folder, dataset, method=method)

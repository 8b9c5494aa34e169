"""Read and write the two voxel file formats of Patrick Min's ``binvox`` program.

* ``.raw`` (``binvox -t raw``): exactly ``d**3`` bytes, one per voxel, 0 or 255.
* ``.binvox`` (``binvox -t binvox``): a text header (``#binvox 1``, ``dim d d d``,
  ``translate tx ty tz``, ``scale s``, ``data``) followed by run-length pairs of bytes
  ``(value, count)`` with value 0/1 and count 1..255.

Axis order: both formats store voxels in the same C order ``[x][z][y]`` (y fastest), so
``np.fromfile(f, np.uint8).reshape(d, d, d)`` of a ``.raw`` gives axis 0 = mesh x,
axis 1 = mesh z (ModelNet's up axis), axis 2 = mesh y. Every function here keeps that
native order, with no transposes: a ``.binvox`` decodes to exactly the array of the
``.raw`` made from the same mesh.

Why not the PyPI package ``binvox`` (0.1.6)? It was evaluated: its dense reader gives the
right array (with ``fix_coords=False``), but it uses ``np.bool`` (missing from numpy
1.24-1.26, which TensorFlow still allows) and ``np.int`` (missing from all current numpy)
and so crashes on some supported installs. Its writer also loops over voxels in Python
(~0.75 s per 64^3 grid), is not atomic, and it does not validate files: a truncated file
fails with an unrelated numpy error. The formats are simple, so this small numpy version
replaces it.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from tf3dgan.atomic import write_bytes
from tf3dgan.errors import DataError

_MAX_HEADER_LINES = 16


class BinvoxHeader(NamedTuple):
    """The metadata of a ``.binvox`` file (grid side, mesh placement)."""

    dim: int
    translate: tuple[float, float, float]
    scale: float


def cube_side(n_voxels: int) -> int | None:
    """Return ``d`` if ``n_voxels == d**3`` for an integer ``d >= 1``, else None."""
    if n_voxels < 1:
        return None
    d = int(round(n_voxels ** (1.0 / 3.0)))
    for candidate in (d - 1, d, d + 1):
        if candidate >= 1 and candidate**3 == n_voxels:
            return candidate
    return None


def _cubic_grid(grid) -> np.ndarray:
    """Check that ``grid`` is a 3-D cube and return it as a flat uint8 0/1 array."""
    grid = np.asarray(grid)
    if grid.ndim != 3 or not grid.shape[0] == grid.shape[1] == grid.shape[2] or grid.size == 0:
        raise ValueError(f"expected a cubic (d, d, d) voxel grid, got shape {grid.shape}")
    return (grid.reshape(-1) != 0).view(np.uint8)


# --------------------------------------------------------------------------- raw


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.raw`` voxel file as a uint8 ``(d, d, d)`` array of 0/1 (nonzero bytes are 1)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read voxel file ({exc.strerror or exc})") from exc
    d = cube_side(data.size)
    if d is None:
        raise DataError(
            f"{os.fspath(path)}: a .raw voxel file must hold d^3 bytes for some d, "
            f"but it has {data.size} bytes"
        )
    return (data != 0).view(np.uint8).reshape(d, d, d)


def write_raw(path: str | os.PathLike, grid) -> None:
    """Atomically write a cubic grid as a ``.raw`` file of 0/255 bytes (like ``binvox -t raw``)."""
    flat = _cubic_grid(grid)
    write_bytes(path, (flat * np.uint8(255)).tobytes())


# ------------------------------------------------------------------------ binvox


def _parse_header(buf: bytes, path: str) -> tuple[BinvoxHeader, int]:
    """Parse the text header of a ``.binvox`` file; return it and the data offset."""
    if not buf.startswith(b"#binvox"):
        raise DataError(f"{path}: not a binvox file (it does not start with '#binvox')")
    fields: dict[bytes, list[bytes]] = {}
    pos = 0
    for line_no in range(_MAX_HEADER_LINES):
        end = buf.find(b"\n", pos)
        if end < 0:
            break
        words = buf[pos:end].split()
        pos = end + 1
        if line_no == 0:
            continue  # '#binvox <version>'
        if words == [b"data"]:
            return _header_from_fields(fields, path), pos
        if not words or words[0] not in (b"dim", b"translate", b"scale"):
            text = b" ".join(words).decode("latin-1")[:60]
            raise DataError(f"{path}: bad binvox header line {line_no + 1} ({text!r})")
        fields[words[0]] = words[1:]
    raise DataError(f"{path}: binvox header has no 'data' line")


def _header_from_fields(fields: dict[bytes, list[bytes]], path: str) -> BinvoxHeader:
    """Build a :class:`BinvoxHeader` from the parsed ``dim``/``translate``/``scale`` words."""
    if b"dim" not in fields:
        raise DataError(f"{path}: binvox header has no 'dim' line")
    try:
        dims = [int(w) for w in fields[b"dim"]]
        translate = tuple(float(w) for w in fields.get(b"translate", [b"0", b"0", b"0"]))
        scale = float(fields.get(b"scale", [b"1"])[0])
    except (ValueError, IndexError):
        raise DataError(f"{path}: binvox header has a malformed dim/translate/scale line") from None
    if len(dims) != 3 or len(translate) != 3:
        raise DataError(f"{path}: binvox header 'dim' and 'translate' need 3 numbers each")
    if not dims[0] == dims[1] == dims[2] or dims[0] < 1:
        raise DataError(f"{path}: binvox grid is {'x'.join(map(str, dims))}; only cubic grids are supported")
    return BinvoxHeader(dims[0], translate, scale)  # type: ignore[arg-type]


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read voxel file ({exc.strerror or exc})") from exc


def read_binvox_header(path: str | os.PathLike) -> BinvoxHeader:
    """Return the header (``dim``, ``translate``, ``scale``) of a ``.binvox`` file."""
    return _parse_header(_read_bytes(path), os.fspath(path))[0]


def read_binvox(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.binvox`` file as a uint8 ``(d, d, d)`` array of 0/1 in native ``[x][z][y]`` order."""
    name = os.fspath(path)
    buf = _read_bytes(path)
    header, offset = _parse_header(buf, name)
    runs = np.frombuffer(buf, dtype=np.uint8, offset=offset)
    if runs.size % 2:
        raise DataError(f"{name}: truncated binvox data (odd number of run-length bytes)")
    values, counts = runs[0::2], runs[1::2]
    if values.size and values.max() > 1:
        raise DataError(f"{name}: corrupt binvox data (run value {int(values.max())} is not 0 or 1)")
    total = int(counts.sum(dtype=np.int64))
    expected = header.dim**3
    if total != expected:
        kind = "truncated" if total < expected else "corrupt"
        raise DataError(f"{name}: {kind} binvox data (runs cover {total} voxels, the {header.dim}^3 grid has {expected})")
    return np.repeat(values, counts).reshape(header.dim, header.dim, header.dim)


def _run_length_encode(flat: np.ndarray) -> bytes:
    """Encode a flat 0/1 uint8 array as binvox ``(value, count)`` pairs, count <= 255."""
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size))
    pieces = (lengths + 254) // 255  # runs longer than 255 become several pairs
    counts = np.full(int(pieces.sum()), 255, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    counts[last] = lengths - 255 * (pieces - 1)
    pairs = np.empty((counts.size, 2), dtype=np.uint8)
    pairs[:, 0] = np.repeat(flat[starts], pieces)
    pairs[:, 1] = counts
    return pairs.tobytes()


def write_binvox(path: str | os.PathLike, grid, translate=(0.0, 0.0, 0.0), scale: float = 1.0) -> None:
    """Atomically write a cubic grid (native ``[x][z][y]`` order) as a ``.binvox`` file.

    ``translate`` and ``scale`` are written with 6 significant digits, as binvox does, so
    re-writing a file read with :func:`read_binvox` / :func:`read_binvox_header`
    reproduces binvox's bytes.
    """
    flat = _cubic_grid(grid)
    d = round(flat.size ** (1.0 / 3.0))
    tx, ty, tz = (float(v) for v in translate)
    header = f"#binvox 1\ndim {d} {d} {d}\ntranslate {tx:g} {ty:g} {tz:g}\nscale {float(scale):g}\ndata\n"
    write_bytes(path, header.encode("ascii") + _run_length_encode(flat))

"""Load voxel datasets for training: folders, files, npz keys and built-in synthetic shapes.

A dataset is held bit-packed in memory (:class:`VoxelDataset`): a 64^3 grid takes 32 KiB,
and :meth:`VoxelDataset.grids` unpacks batches on demand.

Dataset specs accepted by :func:`load_dataset`:

* a folder, searched recursively for ``.raw``, ``.binvox``, ``.npy`` and ``.npz`` files (sorted
  by path, hidden files skipped). If a folder holds :data:`CACHE_NAME` (written by
  :func:`write_cache`), it is read instead of its files when its names equal the set
  of the folder's voxel file stems (or when there are no loose voxel files). A stale
  cache is ignored.
* a file: ``.raw``, ``.binvox``, ``.npy`` or ``.npz``; ``file.npz:key`` picks an npz key
  (default: ``voxels``, else ``train``, else the only array).
* ``synthetic:KIND[:n=N][:res=R][:seed=S]`` with KIND in
  :data:`tf3dgan.synthetic.SHAPE_KINDS` (n defaults to 512, res to the ``resolution``
  argument or else 64, seed to the ``seed`` argument).
* a list of any of these, concatenated in order.

Array layouts: ``.npy`` (and single-array ``.npz``) hold one grid ``(D, D, D)`` or a batch
``(N, D, D, D)``, ``(N, 1, D, D, D)`` or ``(N, D, D, D, 1)``. npz arrays may also be packed
bits ``(N, D**3 / 8)`` uint8 (as in ``shared/data/voxels/*.npz`` and our cache).
Values: bool and integer voxels are occupied when nonzero, float voxels when > 0.5.
Grids must be cubes whose side is a power of two >= 8, and all grids of a dataset must
share it. Voxel order is kept as stored (binvox ``[x][z][y]`` for ``.raw``/``.binvox``).

Problems with the data raise :class:`tf3dgan.errors.DataError` with a one-line message
naming the path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import binvox, synthetic
from .atomic import atomic_path
from .errors import DataError, numpy_load_reason

CACHE_NAME = "tf3dgan_voxels.npz"
VOXEL_SUFFIXES = (".raw", ".binvox", ".npy", ".npz")
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_DEFAULT_N = 512
DEFAULT_RESOLUTION = 64
_PACK_CHUNK = 256  # grids binarised and packed at a time (bounds float temporaries)
_NAME_KEYS = ("names", "dim", "method")  # npz keys that are metadata, never voxel arrays


# ------------------------------------------------------------------ dataset


@dataclass
class VoxelDataset:
    """Bit-packed voxel grids.

    ``packed`` is uint8 ``(N, dim**3 // 8)``: ``np.packbits`` (bit order 'big') of each
    C-order ``(dim, dim, dim)`` 0/1 grid. ``names`` has one entry per grid and ``source``
    says where the data came from.
    """

    packed: np.ndarray
    dim: int
    names: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.packed.dtype != np.uint8 or self.packed.ndim != 2 or self.packed.shape[1] * 8 != self.dim**3:
            raise ValueError(f"packed must be uint8 (N, {self.dim}**3 // 8), got {self.packed.dtype} {self.packed.shape}")
        if len(self.names) != len(self.packed):
            raise ValueError(f"{len(self.names)} names for {len(self.packed)} grids")

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    def grids(self, idx=None) -> np.ndarray:
        """Unpack grids ``idx`` (None = all; an int, slice or index array) to uint8 ``(n, dim, dim, dim)`` 0/1."""
        rows = self.packed if idx is None else self.packed[idx]
        return unpack(rows, self.dim)


def binarize(voxels) -> np.ndarray:
    """Return a uint8 0/1 copy of ``voxels``: bool/int nonzero -> 1, float > 0.5 -> 1."""
    voxels = np.asarray(voxels)
    if voxels.dtype.kind == "f":
        return (voxels > 0.5).view(np.uint8)
    if voxels.dtype.kind in "biu":
        return (voxels != 0).view(np.uint8)
    raise TypeError(f"voxel values must be bool, integer or float, got dtype {voxels.dtype}")


def pack(grids) -> np.ndarray:
    """Pack grids ``(n, d, d, d)`` (or one ``(d, d, d)``) into uint8 ``(n, d**3 // 8)`` (see :func:`binarize`)."""
    grids = np.asarray(grids)
    if grids.ndim == 3:
        grids = grids[None]
    if grids.ndim != 4:
        raise ValueError(f"expected (n, d, d, d) grids, got shape {grids.shape}")
    flat = grids.reshape(grids.shape[0], -1)
    if flat.shape[1] % 8:
        raise ValueError(f"grid size {flat.shape[1]} is not a multiple of 8")
    out = np.empty((flat.shape[0], flat.shape[1] // 8), dtype=np.uint8)
    for start in range(0, flat.shape[0], _PACK_CHUNK):
        out[start:start + _PACK_CHUNK] = np.packbits(binarize(flat[start:start + _PACK_CHUNK]), axis=1)
    return out


def unpack(packed, dim: int) -> np.ndarray:
    """Unpack ``(n, dim**3 // 8)`` (or one row) into uint8 ``(n, dim, dim, dim)`` of 0/1."""
    packed = np.atleast_2d(np.asarray(packed, dtype=np.uint8))
    return np.unpackbits(packed, axis=1, count=dim**3).reshape(-1, dim, dim, dim)


def write_cache(folder: str | os.PathLike, dataset: VoxelDataset, method: str | None = None) -> Path:
    """Atomically write ``dataset`` as ``folder/CACHE_NAME`` (keys ``voxels``, ``names``, ``dim``).

    ``method``: optional note of how the grids were made (e.g. ``binvox-win``), stored
    under the key ``method``; the loader ignores it.
    """
    path = Path(folder) / CACHE_NAME
    extra = {} if method is None else {"method": np.array(str(method))}
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, voxels=dataset.packed, names=np.array(dataset.names, dtype=str),
                            dim=np.int64(dataset.dim), **extra)
    return path


# ------------------------------------------------------------------ loading


@dataclass
class _Part:
    """Grids from one file / cache / synthetic spec, already packed."""

    packed: np.ndarray
    dim: int
    names: list[str]
    origin: str


def load_dataset(spec, *, resolution: int | None = None, seed: int = 0, limit: int | None = None) -> VoxelDataset:
    """Load the dataset described by ``spec`` (see the module docstring for the forms).

    ``resolution``: the grid side the model expects; data of another side is an error
    (and it is the default ``res`` of synthetic specs). ``seed``: default seed of
    synthetic specs. ``limit``: keep only the first ``limit`` grids (and stop reading
    files once there are enough).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise DataError("empty dataset spec: give a folder, a file or synthetic:KIND")
    source = ", ".join(os.fspath(s) for s in specs)
    parts: list[_Part] = []
    count = 0
    for part in _iter_parts(specs, resolution, seed):
        _check_dim(part, parts[0] if parts else None, resolution, source)
        parts.append(part)
        count += len(part.packed)
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise DataError(f"{source}: dataset holds no voxel grids")
    packed = np.concatenate([p.packed for p in parts]) if len(parts) > 1 else parts[0].packed
    names = [name for p in parts for name in p.names]
    if limit is not None:
        packed, names = packed[:limit], names[:limit]
    return VoxelDataset(np.ascontiguousarray(packed), parts[0].dim, names, source)


def _check_dim(part: _Part, first: _Part | None, resolution: int | None, source: str) -> None:
    """Check that ``part`` has an allowed grid side, the model's, and that of the first part."""
    d = part.dim
    if d < 8 or d & (d - 1):
        raise DataError(f"{part.origin}: voxel grids are {d}³; only power-of-two sides >= 8 (8, 16, 32, 64, 128) are supported")
    if first is None:
        if resolution is not None and d != resolution:
            raise DataError(f"{source}: voxel grids are {d}³ but the model expects {resolution}³")
    elif d != first.dim:
        raise DataError(f"{part.origin}: voxel grids are {d}³ but {first.origin} (read first) has {first.dim}³; "
                        "all grids of a dataset must have the same size")


def _iter_parts(specs: Sequence, resolution: int | None, seed: int) -> Iterator[_Part]:
    for item in specs:
        text = os.fspath(item)
        if isinstance(item, str) and text.startswith(SYNTHETIC_PREFIX):
            yield _synthetic_part(text, resolution, seed)
            continue
        path, key = _split_npz_key(text)
        if path.is_dir():
            yield from _folder_parts(path)
        elif path.is_file():
            yield from _file_parts(path, key)
        else:
            raise _missing(path)


def _split_npz_key(text: str) -> tuple[Path, str | None]:
    """Split ``file.npz:key`` into the path and the key (None when there is no key)."""
    head, sep, key = text.rpartition(":")
    if sep and head.lower().endswith(".npz") and key and not Path(text).exists():
        return Path(head), key
    return Path(text), None


def _missing(path: Path) -> DataError:
    if path.suffix.lower() in VOXEL_SUFFIXES:
        return DataError(f"voxel file '{path}' does not exist")
    return DataError(f"data folder '{path}' does not exist; give -d a folder of voxel grids (.raw/.binvox/"
                     ".npy/.npz, e.g. ModelNet .off meshes voxelized with binvox -d 64 -t raw), or use -d synthetic:chairs")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------- synthetic


def _synthetic_part(spec: str, resolution: int | None, seed: int) -> _Part:
    """Generate the grids of ``synthetic:KIND[:key=value...]``."""
    kind, *options = spec[len(SYNTHETIC_PREFIX):].split(":")
    if kind not in synthetic.SHAPE_KINDS:
        raise DataError(f"{spec}: unknown synthetic kind {kind!r}; choose one of {', '.join(synthetic.SHAPE_KINDS)}")
    values = {"n": SYNTHETIC_DEFAULT_N, "res": resolution or DEFAULT_RESOLUTION, "seed": seed}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in values:
            raise DataError(f"{spec}: bad synthetic option {option!r}; use n=COUNT, res=SIDE or seed=INT")
        try:
            values[key] = int(value)
        except ValueError:
            raise DataError(f"{spec}: synthetic option {key} must be an integer, got {value!r}") from None
    n, res = values["n"], values["res"]
    if n < 1:
        raise DataError(f"{spec}: synthetic option n must be >= 1, got {n}")
    if res < 8 or res & (res - 1):
        raise DataError(f"{spec}: synthetic option res must be a power of two >= 8, got {res}")
    grids = synthetic.make_shapes(kind, n, res, values["seed"])
    names = [f"{kind}_{i:05d}" for i in range(n)]
    return _Part(pack(grids), res, names, spec)


# ------------------------------------------------------------------- folders


@dataclass
class _Dir:
    """One scanned folder: its own voxel files and subfolders (sorted), and whether it has a cache."""

    path: Path
    files: list[Path]
    subdirs: list["_Dir"]
    has_cache: bool

    def all_files(self) -> list[Path]:
        """Voxel files in this folder and below, sorted by path."""
        return sorted(self.files + [f for d in self.subdirs for f in d.all_files()])

    def any_cache(self) -> bool:
        return self.has_cache or any(d.any_cache() for d in self.subdirs)


def _scan(folder: Path) -> _Dir:
    """Scan ``folder`` recursively (one ``os.walk``; hidden files and folders are skipped)."""
    nodes: dict[str, _Dir] = {}
    for root, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = sorted(Path(root, f) for f in filenames
                       if not f.startswith(".") and f != CACHE_NAME and Path(f).suffix.lower() in VOXEL_SUFFIXES)
        nodes[root] = _Dir(Path(root), files, [], CACHE_NAME in filenames)
    for root, node in nodes.items():
        if root != os.fspath(folder):
            nodes[os.path.dirname(root)].subdirs.append(node)
    for node in nodes.values():
        node.subdirs.sort(key=lambda d: d.path.name)
    return nodes[os.fspath(folder)]


def _stem(path: Path) -> str:
    """File name without its voxel suffix (``chair_0013.d32_e_cb.binvox`` -> ``chair_0013.d32_e_cb``)."""
    return path.name[: -len(path.suffix)]


def _cache_matches(cache: Path, files: list[Path]) -> bool:
    """True if ``cache`` should replace ``files``: no loose files, or the same set of names."""
    if not files:
        return True
    try:
        with np.load(cache, allow_pickle=False) as z:
            names = set(z["names"].tolist())
    except Exception:  # an unreadable cache beside loose files is just ignored
        return False
    return names == {_stem(f) for f in files}


def _folder_parts(folder: Path) -> Iterator[_Part]:
    """Yield the parts of a folder tree in path order, using consistent per-folder caches."""
    root = _scan(folder)
    if not root.all_files() and not root.any_cache():
        raise _no_voxel_files(folder)
    yield from _dir_parts(root)


def _dir_parts(node: _Dir) -> Iterator[_Part]:
    cache = node.path / CACHE_NAME
    files = node.all_files()
    if node.has_cache and _cache_matches(cache, files):
        yield from _file_parts(cache, None)
        return
    entries = sorted([(f.name, f) for f in node.files] + [(d.path.name, d) for d in node.subdirs],
                     key=lambda entry: entry[0])
    for _, entry in entries:
        if isinstance(entry, _Dir):
            yield from _dir_parts(entry)
        else:
            yield from _file_parts(entry, None)


def _no_voxel_files(folder: Path) -> DataError:
    meshes = sum(1 for p in folder.rglob("*") if p.suffix.lower() == ".off")
    suffixes = ", ".join(VOXEL_SUFFIXES)
    if meshes:
        return DataError(f"data folder '{folder}' has no voxel files ({suffixes}) but {meshes} .off "
                         "meshes: convert them first with tools/convert_data.py")
    return DataError(f"data folder '{folder}' has no voxel files ({suffixes})")


# --------------------------------------------------------------------- files


def _file_parts(path: Path, key: str | None) -> Iterator[_Part]:
    suffix = path.suffix.lower()
    if key is not None and suffix != ".npz":
        raise DataError(f"{path}: only .npz files have keys")
    if suffix == ".raw":
        yield _single_grid_part(path, binvox.read_raw(path))
    elif suffix == ".binvox":
        yield _single_grid_part(path, binvox.read_binvox(path))
    elif suffix == ".npy":
        yield _npy_part(path)
    elif suffix == ".npz":
        yield _npz_part(path, key)
    else:
        raise DataError(f"{path}: unknown voxel file type '{path.suffix}'; use {', '.join(VOXEL_SUFFIXES)}")


def _single_grid_part(path: Path, grid: np.ndarray) -> _Part:
    return _Part(np.packbits(grid.reshape(1, -1), axis=1), grid.shape[0], [_stem(path)], str(path))


def _read_error(path: Path, exc: Exception) -> DataError:
    return DataError(_one_line(f"{path}: cannot read voxel array ({numpy_load_reason(exc)})"))


def _npy_part(path: Path) -> _Part:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise _read_error(path, exc) from exc
    return _array_part(str(path), array, _stem(path), names=None, packed_ok=False)


def _npz_part(path: Path, key: str | None) -> _Part:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            key = _npz_key(path, keys, key)
            array = z[key]
            names = _npz_names(z, key, array.shape[0] if array.ndim else 0)
            dim = int(z["dim"]) if key == "voxels" and "dim" in keys else None
    except DataError:
        raise
    except Exception as exc:  # BadZipFile, ValueError (pickled objects), EOFError, OSError ...
        raise _read_error(path, exc) from exc
    stem = _stem(path) if len(keys) == 1 else f"{_stem(path)}_{key}"
    return _array_part(f"{path}:{key}", array, stem, names=names, packed_ok=True, dim=dim)


def _npz_key(path: Path, keys: list[str], key: str | None) -> str:
    """The array key to read: the asked one, else ``voxels``, ``train`` or the only array."""
    arrays = [k for k in keys if k not in _NAME_KEYS and not k.endswith("_names")]
    if key is not None:
        if key not in keys:
            raise DataError(f"{path}: npz has no key {key!r}; keys are {', '.join(keys)}")
        return key
    for default in ("voxels", "train"):
        if default in arrays:
            return default
    if len(arrays) == 1:
        return arrays[0]
    raise DataError(f"{path}: npz holds several arrays ({', '.join(arrays) or 'none'}); pick one with {path}:KEY")


def _npz_names(z, key: str, count: int) -> list[str] | None:
    """Grid names stored beside ``key`` (``names`` for ``voxels``, ``<key>_names`` otherwise)."""
    names_key = "names" if key == "voxels" else f"{key}_names"
    if names_key in z.files:
        names = z[names_key]
        if names.ndim == 1 and len(names) == count:
            return [str(n) for n in names]
    return None


_LAYOUTS = "(D,D,D), (N,D,D,D), (N,1,D,D,D) or (N,D,D,D,1)"


def _array_part(origin: str, array: np.ndarray, stem: str, names: list[str] | None, packed_ok: bool,
                dim: int | None = None) -> _Part:
    """Turn an array of any accepted layout into a packed :class:`_Part`.

    ``origin`` names the array in messages (``file.npy`` or ``file.npz:key``); ``stem`` is
    the base of generated grid names; ``packed_ok`` allows packed-bit rows (npz only).
    """
    if array.dtype.kind not in "biuf":
        raise DataError(f"{origin}: voxel array has dtype {array.dtype}; expected bool, integer or float")
    if array.ndim == 2 and packed_ok:
        return _packed_part(origin, array, stem, names, dim)
    grids = as_batch(array, origin, packed_ok=packed_ok)
    if names is None:
        names = [stem] if array.ndim == 3 else [f"{stem}_{i:05d}" for i in range(len(grids))]
    return _Part(pack(grids), grids.shape[1], names, origin)


def as_batch(array: np.ndarray, origin: str, *, cubic: bool = True, packed_ok: bool = False) -> np.ndarray:
    """View a voxel array ``(D,H,W)``, ``(N,D,H,W)``, ``(N,1,D,H,W)`` or ``(N,D,H,W,1)`` as
    ``(N, D, H, W)``; ``cubic`` also requires D = H = W.  Anything else is a DataError naming
    ``origin`` and listing the accepted shapes."""
    shape = array.shape
    batch = None
    if array.ndim == 3:
        batch = array[None]
    elif array.ndim == 4:
        batch = array
    elif array.ndim == 5 and shape[1] == 1:
        batch = array[:, 0]
    elif array.ndim == 5 and shape[4] == 1:
        batch = array[..., 0]
    if batch is None or (cubic and not batch.shape[1] == batch.shape[2] == batch.shape[3]):
        layouts = _LAYOUTS if cubic else _LAYOUTS.replace("D,D,D", "D,H,W")
        packed = (" or packed bits (N, D³/8) uint8" if packed_ok else " (packed bits only in .npz)") if cubic else ""
        raise DataError(f"{origin}: voxel array has shape {shape}; accepted shapes are {layouts}{packed}")
    return batch


def _packed_part(origin: str, array: np.ndarray, stem: str, names: list[str] | None, dim: int | None) -> _Part:
    """A ``(N, D**3/8)`` uint8 array of packed bits."""
    if array.dtype != np.uint8:
        raise DataError(f"{origin}: 2-D voxel array must be packed bits (N, D³/8) of uint8, got {array.dtype}")
    side = dim or binvox.cube_side(array.shape[1] * 8)
    if side is None or side**3 != array.shape[1] * 8:
        raise DataError(f"{origin}: packed voxel rows have {array.shape[1]} bytes, which is not D³/8 for any D; "
                        f"accepted shapes are {_LAYOUTS} or packed bits (N, D³/8) uint8")
    if names is None:
        names = [f"{stem}_{i:05d}" for i in range(len(array))]
    return _Part(np.ascontiguousarray(array), side, names, origin)


def voxel_files(folder: str | os.PathLike) -> list[Path]:
    """The loose voxel files under ``folder`` (recursive, sorted by path; caches and hidden files excluded)."""
    return _scan(Path(folder)).all_files()

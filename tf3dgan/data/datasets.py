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
  :data:`tf3dgan.data.synthetic.SHAPE_KINDS` (n defaults to 512, res to the ``resolution``
  argument or else 64, seed to the ``seed`` argument).
* a list of any of these, concatenated in order.

Pooling.  When the model expects ``resolution`` R and the grids are D³ with D = R·2^k, the grids
are pooled down by the factor f = D/R per axis with binvox's ``-down`` rule generalised by
``pool_min``: a coarse cell is set when at least ``pool_min`` of its f³ fine voxels are set
(default 1: OR-pooling, ``binvox -down -dmin 1``).  The pooled grids are cached (see
:func:`pooled_cache_path`): beside a folder's files as ``tf3dgan_voxels_<R>[_min<k>].npz``, or,
for files (and folders that cannot be written), in the user cache folder
(``$TF3DGAN_CACHE``, else ``~/.cache/tf3dgan``; folders without any write permission bit are never
written into, not even by root), so a second load costs no pooling and no
reading of the source.  A cache is used only while the source's files keep their size and
modification time; a stale or unreadable one is rewritten.  Synthetic specs are pooled but not
cached.

Array layouts: ``.npy`` (and single-array ``.npz``) hold one grid ``(D, D, D)`` or a batch
``(N, D, D, D)``, ``(N, 1, D, D, D)`` or ``(N, D, D, D, 1)``. npz arrays may also be packed
bits ``(N, D**3 / 8)`` uint8 (as in ``shared/data/voxels/*.npz`` and our cache).
Values: bool and integer voxels are occupied when nonzero, float voxels when > 0.5 (NaN or
infinite float values are refused).
Grids must be cubes whose side is a power of two >= 8, and all grids of a dataset must
share it. Voxel order is kept as stored (binvox ``[x][z][y]`` for ``.raw``/``.binvox``).

Problems with the data raise :class:`tf3dgan.errors.DataError` with a one-line message
naming the path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from tf3dgan.atomic import atomic_path
from tf3dgan.data import binvox, synthetic
from tf3dgan.errors import DataError, Tf3dganError, numpy_load_reason

CACHE_NAME = "tf3dgan_voxels.npz"
VOXEL_SUFFIXES = (".raw", ".binvox", ".npy", ".npz")
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_DEFAULT_N = 512
DEFAULT_RESOLUTION = 64
_PACK_CHUNK = 256  # grids binarised and packed at a time (bounds float temporaries)
_POOL_CHUNK = 32   # grids unpacked at a time while pooling (32 × 64³ bytes = 8 MiB)
# npz keys that are metadata, never voxel arrays
_NAME_KEYS = ("names", "dim", "method", "pooled_from", "pool_min", "fingerprint", "source")
CACHE_ENV = "TF3DGAN_CACHE"
POOLED_CACHE_RE = re.compile(r"^tf3dgan_voxels_\d+(_min\d+)?\.npz$")   # pooled caches, never voxel files
_POOLED_VERSION = 1


# ------------------------------------------------------------------ dataset


@dataclass
class VoxelDataset:
    """Bit-packed voxel grids.

    ``packed`` is uint8 ``(N, dim**3 // 8)``: ``np.packbits`` (bit order 'big') of each
    C-order ``(dim, dim, dim)`` 0/1 grid. ``names`` has one entry per grid and ``source``
    says where the data came from (the spec as given).

    ``pooled_from``: the side of the stored grids when :func:`load_dataset` pooled them down
    to ``dim`` (else None), with ``pool_min`` (the rule's count, else None) and ``pool_cache``
    (the cache file read or written, else None; ``pool_cache_hit`` says which).
    """

    packed: np.ndarray
    dim: int
    names: list[str]
    source: str
    pooled_from: int | None = None
    pool_min: int | None = None
    pool_cache: str | None = None
    pool_cache_hit: bool = False

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

    def pooling_note(self) -> str | None:
        """One line saying how the grids were pooled (None when they were not), for logs."""
        if self.pooled_from is None:
            return None
        f = self.pooled_from // self.dim
        rule = "OR-pooled" if self.pool_min == 1 else f"pooled with --pool-min {self.pool_min}"
        text = (f"{self.pooled_from}³ grids {rule} to {self.dim}³ (a cell is set when >= {self.pool_min} "
                f"of its {f ** 3} voxels are)")
        if self.pool_cache:
            text += f"; {'read from' if self.pool_cache_hit else 'cached in'} {self.pool_cache}"
        return text


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


def pool(packed, dim: int, factor: int, pool_min: int = 1) -> np.ndarray:
    """Pool packed ``(n, dim**3 // 8)`` grids down by ``factor`` per axis to ``(n, (dim/factor)**3 // 8)``.

    A coarse cell ``(i, j, k)`` is set when at least ``pool_min`` of the ``factor**3`` fine
    voxels ``[f·i, f·i+f) × [f·j, f·j+f) × [f·k, f·k+f)`` are set: binvox's ``-down`` rule with
    ``-dmin pool_min`` (``pool_min=1`` is OR-pooling).  Works a chunk of grids at a time on
    uint8 counts, never on the whole unpacked dataset.
    """
    packed = np.atleast_2d(np.asarray(packed, dtype=np.uint8))
    if factor < 1 or dim % factor:
        raise ValueError(f"factor {factor} does not divide the grid side {dim}")
    if not 1 <= pool_min <= factor**3:
        raise ValueError(f"pool_min must be between 1 and {factor**3}, got {pool_min}")
    r = dim // factor
    if (r**3) % 8:
        raise ValueError(f"pooled grids of side {r} do not pack into whole bytes")
    out = np.empty((packed.shape[0], r**3 // 8), dtype=np.uint8)
    count_type = np.uint8 if factor**3 <= 255 else np.uint16
    for start in range(0, packed.shape[0], _POOL_CHUNK):
        fine = unpack(packed[start:start + _POOL_CHUNK], dim).reshape(-1, r, factor, r, factor, r, factor)
        counts = fine[..., 0].astype(count_type)         # sum each axis's factor in turn: strided adds
        for i in range(1, factor):                          # are much faster than one sum over 3 axes
            counts += fine[..., i]
        plane = counts[..., 0, :].copy()
        for i in range(1, factor):
            plane += counts[..., i, :]
        cells = plane[:, :, 0].copy()
        for i in range(1, factor):
            cells += plane[:, :, i]
        out[start:start + len(cells)] = np.packbits((cells >= pool_min).reshape(len(cells), -1), axis=1)
    return out


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


@dataclass
class _Item:
    """The grids of one spec of the list, at the model's side (pooled if needed)."""

    packed: np.ndarray
    names: list[str]
    dim: int               # the side of the stored grids (before pooling)
    origin: str            # the first part's origin, for messages
    cache: str | None = None
    cache_hit: bool = False


def load_dataset(spec, *, resolution: int | None = None, seed: int = 0, limit: int | None = None,
                 pool_min: int = 1) -> VoxelDataset:
    """Load the dataset described by ``spec`` (see the module docstring for the forms).

    ``resolution``: the grid side the model expects (and the default ``res`` of synthetic
    specs).  Larger grids whose side is ``resolution`` times a power of two are pooled down
    to it (see :func:`pool`; ``pool_min`` is the rule's count, 1 to factor³, used only when
    pooling) and the result cached; any other side is an error.  ``seed``: default seed of
    synthetic specs.  ``limit``: keep only the first ``limit`` grids (and stop reading
    files once there are enough).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if isinstance(pool_min, bool) or not isinstance(pool_min, (int, np.integer)) or pool_min < 1:
        raise DataError(f"--pool-min must be a whole number >= 1 (voxels of a pooled cell), got {pool_min!r}")
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise DataError("empty dataset spec: give a folder, a file or synthetic:KIND")
    source = ", ".join(os.fspath(s) for s in specs)
    items: list[_Item] = []
    count = 0
    for item in specs:
        remaining = None if limit is None else limit - count
        got = _load_item(item, resolution, seed, pool_min, remaining, source, items[0] if items else None)
        items.append(got)
        count += len(got.packed)
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise DataError(f"{source}: dataset holds no voxel grids")
    packed = np.concatenate([i.packed for i in items]) if len(items) > 1 else items[0].packed
    names = [name for i in items for name in i.names]
    if limit is not None:
        packed, names = packed[:limit], names[:limit]
    dim = items[0].dim if resolution is None else resolution
    pooled = dim != items[0].dim
    caches = [i.cache for i in items if i.cache]
    return VoxelDataset(np.ascontiguousarray(packed), dim, names, source,
                        pooled_from=items[0].dim if pooled else None, pool_min=pool_min if pooled else None,
                        pool_cache=", ".join(caches) if caches else None,
                        pool_cache_hit=bool(caches) and all(i.cache_hit for i in items if i.cache))


def _load_item(item, resolution: int | None, seed: int, pool_min: int, remaining: int | None, source: str,
               first: _Item | None) -> _Item:
    """Read one spec of the list (stopping after ``remaining`` grids), pooled to ``resolution`` if needed."""
    text = os.fspath(item)
    target: _CacheTarget | None = None
    if isinstance(item, str) and text.startswith(SYNTHETIC_PREFIX):
        parts: Iterator[_Part] = iter([_synthetic_part(text, resolution, seed)])
    else:
        path, key = _split_npz_key(text)
        if path.is_dir():
            root = _scan(path)
            if not root.all_files() and not root.any_cache():
                raise _no_voxel_files(path)
            if resolution is not None:
                target = _CacheTarget.for_folder(path, root, resolution, pool_min)
            parts = _dir_parts(root)
        elif path.is_file():
            if resolution is not None:
                target = _CacheTarget.for_file(path, key, resolution, pool_min)
            parts = _file_parts(path, key)
        else:
            raise _missing(path)
    if target is not None:
        hit = target.read()
        if hit is not None:
            packed, names, dim, where = hit
            if first is not None and dim != first.dim:
                raise _size_mismatch(text, dim, first)
            if remaining is not None:
                packed, names = packed[:remaining], names[:remaining]
            return _Item(packed, names, dim, text, cache=str(where), cache_hit=True)
    got: list[_Part] = []
    count = 0
    complete = True
    for part in parts:
        _check_dim(part, got[0] if got else first, resolution, source, pool_min)
        got.append(part)
        count += len(part.packed)
        if remaining is not None and count >= remaining:   # cache only a whole source (peek only then)
            complete = target is not None and got[0].dim != resolution and next(parts, None) is None
            break
    if not got:
        raise DataError(f"{text}: holds no voxel grids")
    dim = got[0].dim
    packed = np.concatenate([p.packed for p in got]) if len(got) > 1 else got[0].packed
    names = [name for p in got for name in p.names]
    item_out = _Item(packed, names, dim, got[0].origin)
    if resolution is None or dim == resolution:
        return item_out
    item_out.packed = pool(packed, dim, dim // resolution, pool_min)
    if target is not None and complete:
        where = target.write(item_out.packed, names, dim, text)
        item_out.cache = None if where is None else str(where)
    return item_out


def _check_dim(part: _Part, first, resolution: int | None, source: str, pool_min: int = 1) -> None:
    """Check that ``part`` has an allowed grid side, one the model's side can be had from, and that of the first part."""
    d = part.dim
    if d < 8 or d & (d - 1):
        raise DataError(f"{part.origin}: voxel grids are {d}³; only power-of-two sides >= 8 (8, 16, 32, 64, 128) are supported")
    if first is None:
        if resolution is not None and d != resolution:
            pool_factor(d, resolution, pool_min, source)
    elif d != first.dim:
        raise _size_mismatch(part.origin, d, first)


def _size_mismatch(origin: str, d: int, first) -> DataError:
    return DataError(f"{origin}: voxel grids are {d}³ but {first.origin} (read first) has {first.dim}³; "
                     "all grids of a dataset must have the same size")


def pool_factor(dim: int, resolution: int, pool_min: int = 1, source: str = "data") -> int:
    """The factor that pools ``dim``³ grids down to ``resolution``³; a DataError naming ``source``
    (and what works) when there is none, or when ``pool_min`` is not 1 to factor³."""
    sides = [dim >> i for i in range(dim.bit_length()) if dim >> i >= 8]
    if resolution not in sides:
        smaller = [str(s) for s in sides[1:]]
        choices = f"{dim} (as stored)" + (f" or {_or_list(smaller)} (pooled down)" if smaller else "")
        if resolution < 8 or resolution & (resolution - 1):
            hint = f"grid sides must be powers of two >= 8: give --resolution {choices}"
        else:
            hint = (f"grids can be pooled down, not up: give --resolution {choices}, or voxelize the meshes "
                    f"at {resolution}³ (python tools/convert_data.py -m MESHES --dim {resolution})")
        raise DataError(f"{source}: voxel grids are {dim}³ but the model expects {resolution}³; {hint}")
    factor = dim // resolution
    if not 1 <= pool_min <= factor**3:
        raise DataError(f"--pool-min {pool_min} is out of range: pooling {dim}³ grids to {resolution}³ merges "
                        f"{factor**3} voxels into each cell, so give --pool-min 1 to {factor**3}")
    return factor


def _or_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# ------------------------------------------------------------- pooled cache


def user_cache_dir() -> Path:
    """The per-user cache folder: ``$TF3DGAN_CACHE``, else ``~/.cache/tf3dgan``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tf3dgan"


def pooled_cache_name(resolution: int, pool_min: int = 1) -> str:
    """``tf3dgan_voxels_<R>.npz`` (OR-pooling) or ``tf3dgan_voxels_<R>_min<k>.npz``."""
    return f"tf3dgan_voxels_{resolution}.npz" if pool_min == 1 else f"tf3dgan_voxels_{resolution}_min{pool_min}.npz"


def pooled_cache_path(spec: str | os.PathLike, resolution: int, pool_min: int = 1, *, beside: bool = False) -> Path:
    """Where the grids of ``spec`` (a folder, file or ``FILE.npz:KEY``) pooled to ``resolution`` are
    cached: in a folder beside its files (``beside=True``) or in :func:`user_cache_dir` (``pooled/``,
    one file per source path, key, side and pool_min)."""
    path, key = _split_npz_key(os.fspath(spec))
    if beside:
        return path / pooled_cache_name(resolution, pool_min)
    resolved = str(path.resolve())
    digest = hashlib.sha256(json.dumps([resolved, key]).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.resolve().name + (f"_{key}" if key else ""))[:60] or "data"
    return user_cache_dir() / "pooled" / f"{stem}-{digest}-{pooled_cache_name(resolution, pool_min)}"


@dataclass
class _CacheTarget:
    """The cache files of one source pooled to one side, and the fingerprint that keeps them valid."""

    places: list[Path]     # read in this order; written to the first that can be written
    fingerprint: str
    resolution: int
    pool_min: int

    @classmethod
    def for_folder(cls, folder: Path, root: "_Dir", resolution: int, pool_min: int) -> "_CacheTarget":
        files = root.all_files() + root.all_caches()
        stats = []
        for f in sorted(files):
            st = f.stat()
            stats.append([f.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
        beside = pooled_cache_path(folder, resolution, pool_min, beside=True)
        places = [pooled_cache_path(folder, resolution, pool_min)]
        if not read_only_folder(folder):
            places.insert(0, beside)
        elif beside.is_file():      # read (not written) beside a read-only folder's files
            places.append(beside)
        return cls(places, _fingerprint({"files": stats}, resolution, pool_min), resolution, pool_min)

    @classmethod
    def for_file(cls, path: Path, key: str | None, resolution: int, pool_min: int) -> "_CacheTarget":
        st = path.stat()
        spec = f"{path}:{key}" if key else str(path)
        what = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "key": key}
        return cls([pooled_cache_path(spec, resolution, pool_min)], _fingerprint(what, resolution, pool_min),
                   resolution, pool_min)

    def read(self):
        """``(packed, names, stored side, path)`` of the first valid cache, else None (stale or corrupt: ignored)."""
        for place in self.places:
            if not place.is_file():
                continue
            try:
                with np.load(place, allow_pickle=False) as z:
                    if (str(z["fingerprint"]) != self.fingerprint or int(z["dim"]) != self.resolution
                            or int(z["pool_min"]) != self.pool_min):
                        continue
                    packed, names, pooled_from = z["voxels"], [str(n) for n in z["names"]], int(z["pooled_from"])
            except Exception:   # a damaged or foreign file: pooled again and rewritten
                continue
            if (packed.dtype == np.uint8 and packed.ndim == 2 and packed.shape[1] * 8 == self.resolution**3
                    and len(names) == len(packed)):
                return packed, names, pooled_from, place
        return None

    def write(self, packed: np.ndarray, names: list[str], pooled_from: int, source: str) -> Path | None:
        """Write the cache to the first writable place; one warning line (and None) when none is."""
        reasons = []
        for place in self.places:
            try:
                with atomic_path(place) as tmp:
                    np.savez_compressed(tmp, voxels=packed, names=np.array(names, dtype=str),
                                        dim=np.int64(self.resolution), pooled_from=np.int64(pooled_from),
                                        pool_min=np.int64(self.pool_min), fingerprint=np.array(self.fingerprint),
                                        source=np.array(source))
                return place
            except Tf3dganError as exc:   # WriteError: read-only, no permission, full disk
                reasons.append(str(exc))
            except OSError as exc:
                reasons.append(f"cannot write {place}: {exc.strerror or exc}")
        print(f"warning: pooled grids of {source} not cached ({reasons[-1]}); they are pooled again on the next "
              f"load (set {CACHE_ENV} to a writable folder)", file=sys.stderr, flush=True)
        return None


def read_only_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` has no write permission bit at all (``chmod a-w``): a data folder meant to stay
    as it is, even for root, whom the system would let write there.  Its pooled cache goes to the user cache."""
    try:
        return not os.stat(folder).st_mode & 0o222
    except OSError:
        return True


def _fingerprint(what: dict, resolution: int, pool_min: int) -> str:
    text = json.dumps({"version": _POOLED_VERSION, "resolution": resolution, "pool_min": pool_min, **what},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _split_npz_key(text: str) -> tuple[Path, str | None]:
    """Split ``file.npz:key`` into the path and the key (None when there is no key)."""
    head, sep, key = text.rpartition(":")
    if sep and head.lower().endswith(".npz") and key and not Path(text).exists():
        return Path(head), key
    return Path(text), None


split_npz_key = _split_npz_key


def _missing(path: Path) -> DataError:
    if path.suffix.lower() in VOXEL_SUFFIXES:
        return DataError(f"voxel file '{path}' does not exist")
    meshes = path.parent if path.name in ("train", "test") and path.parent.name else path
    return DataError(f"data folder '{path}' does not exist; voxelize meshes with python tools/convert_data.py "
                     f"-m {meshes} (ModelNet10 meshes: python tools/download_data.py), or give -d a folder or "
                     ".npz of voxel grids, or -d synthetic:chairs")


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

    def all_caches(self) -> list[Path]:
        """The dataset caches (:data:`CACHE_NAME`) in this folder and below."""
        return ([self.path / CACHE_NAME] if self.has_cache else []) + [c for d in self.subdirs for c in d.all_caches()]


def _scan(folder: Path) -> _Dir:
    """Scan ``folder`` recursively (one ``os.walk``; hidden files and folders are skipped)."""
    nodes: dict[str, _Dir] = {}
    for root, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = sorted(Path(root, f) for f in filenames
                       if not f.startswith(".") and f != CACHE_NAME and not POOLED_CACHE_RE.match(f)
                       and Path(f).suffix.lower() in VOXEL_SUFFIXES)
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
    check_finite(grids, origin)
    if names is None:
        names = [stem] if array.ndim == 3 else [f"{stem}_{i:05d}" for i in range(len(grids))]
    return _Part(pack(grids), grids.shape[1], names, origin)


def check_finite(grids: np.ndarray, origin: str) -> None:
    """Refuse NaN and infinite values in a float ``(N, ...)`` batch of grids: a DataError naming
    ``origin``, the number of bad values and the first grid holding one (read in chunks)."""
    grids = np.asarray(grids) if not isinstance(grids, np.ndarray) else grids
    if grids.dtype.kind not in "fc":
        return
    bad, first = 0, None
    rows = grids.reshape(len(grids), -1) if grids.ndim > 1 else grids.reshape(1, -1)
    for start in range(0, len(rows), _PACK_CHUNK):
        per_grid = np.count_nonzero(~np.isfinite(rows[start:start + _PACK_CHUNK]), axis=1)
        if first is None and per_grid.any():
            first = start + int(np.flatnonzero(per_grid)[0])
        bad += int(per_grid.sum())
    if bad:
        where = f" (the first in grid {first} of {len(rows)})" if len(rows) > 1 else ""
        raise DataError(f"{origin}: voxel array holds {bad} NaN or infinite value{'s' * (bad != 1)} of "
                        f"{rows.size}{where}; voxel values must be finite numbers")


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

"""The one exception type users see as a single clear line."""


class Tf3dganError(Exception):
    """An error caused by the user's input or files (not a bug).

    Tools print ``error: <message>`` and exit with status 2; the message must name
    the file or setting at fault and say what is wrong with it.
    """


class DataError(Tf3dganError):
    """A voxel file, folder or dataset spec that cannot be used."""


class CheckpointError(Tf3dganError):
    """A checkpoint that is missing, corrupt or does not fit the run."""


class WriteError(Tf3dganError):
    """An output that cannot be written: read-only location, no permission, full disk."""


def write_error(path, exc: OSError) -> WriteError:
    """One line for a failed write of ``path``: what the system said, and the free space where it matters."""
    import errno
    import shutil
    from pathlib import Path

    path = Path(path)
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = next((p for p in (path.parent, *path.parents) if p.exists()), None)
        try:
            free = shutil.disk_usage(folder).free if folder is not None else None
        except OSError:
            free = None
        where = "" if free is None else f" ({_size(free)} free on that disk)"
        return WriteError(f"cannot write {path}: {reason}{where}; free some space and run again")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WriteError(f"cannot write {path}: {reason}; choose a writable location")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None and blocker != path:
            return WriteError(f"cannot write {path}: {blocker} is a file, not a folder")
    return WriteError(f"cannot write {path}: {reason}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def numpy_load_reason(exc: Exception) -> str:
    """Why ``np.load(..., allow_pickle=False)`` failed, in words for a user.

    NumPy takes any file without the .npy/.npz signature for a pickle and says "load it
    unsafely with allow_pickle" — the wrong advice for a damaged or foreign file."""
    text = str(exc)
    if isinstance(exc, ValueError) and ("Object arrays" in text or "Python objects" in text):
        return "holds an array of Python objects, not numbers (refused: loading it would run pickle)"
    if isinstance(exc, ValueError) and "pickled" in text:   # NumPy 2: "contains pickled", 1.x: "containing pickled"
        return "not a NumPy .npy/.npz file (no NumPy or zip signature: damaged, or another kind of file)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

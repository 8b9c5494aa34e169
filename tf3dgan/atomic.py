"""Atomic file writes: write to a temporary file beside the target, then rename.

A process killed at any moment leaves either the old file or the new one, never a
half-written one (``os.replace`` is atomic on POSIX and Windows within a folder).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from tf3dgan.errors import write_error

TEMP_PREFIX = "."   # temporary files are hidden: ".<stem>-<random><suffix>"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    ``suffix`` defaults to the target's own suffix(es), so writers that look at the
    extension (``np.save``, ``savefig``, Keras ``save_weights``) behave as for the target.
    On an exception the temporary file is removed and the target is left untouched; a
    read-only location, a missing permission or a full disk becomes one
    :class:`~tf3dgan.errors.WriteError` line naming ``path`` (and the free space).
    """
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError) and e.errno is not None:
            raise write_error(path, e) from None
        raise


def check_output_folder(folder: str | os.PathLike) -> None:
    """Refuse up front (before any slow work) an output folder that cannot be created or written into.

    Walks up from ``folder`` to the first path that exists: it must be a folder (not a file, as in
    ``--dest notes.txt/out``) that this process may write into — not on a read-only file system, not
    without permission, and not one with no write permission bit at all (``chmod a-w``: meant to stay as
    it is, also for root, whom the system lets write there). Raises :class:`~tf3dgan.errors.WriteError`
    naming it; a folder that passes can still fill up, which :func:`atomic_path` reports when it happens.
    Every tool calls it for its outputs."""
    from tf3dgan.errors import WriteError

    folder = Path(folder)
    for p in (folder, *folder.parents):
        if not (p.exists() or p.is_symlink()):
            continue
        if not p.is_dir():
            what = "it" if p == folder else str(p)
            raise WriteError(f"cannot write into {folder}: {what} is a file, not a folder")
        try:
            no_bits = not os.stat(p).st_mode & 0o222
        except OSError:
            no_bits = True
        if no_bits or not os.access(p, os.W_OK | os.X_OK):
            try:
                read_only = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
            except (OSError, AttributeError):   # no statvfs (Windows)
                read_only = False
            why = ("read-only file system" if read_only else "read-only: no write permission" if no_bits
                   else "no permission to write there")
            raise WriteError(f"cannot write into {folder}: {p} is not writable ({why}); choose a writable location")
        return


def temp_prefix(path: str | os.PathLike) -> str:
    """The name start of ``path``'s temporary files (see :func:`stale_temps`)."""
    return f"{TEMP_PREFIX}{Path(path).stem.split('.')[0]}-"


def stale_temps(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Temporary files that :func:`atomic_path` left in ``folder`` when its process was killed
    mid-write: hidden files named ``.<stem>-XXXXXXXX<suffix>`` (mkstemp's 8 random characters)."""
    import re

    pattern = re.compile(r"^\.[^/]*-[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)*$")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*") if recursive else folder.glob(".*")
    return sorted(p for p in found if p.is_file() and pattern.match(p.name))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"))

"""Download and unpack the ModelNet CAD datasets (the original ``download_data.py``, made safe).

The flow of :func:`prepare`:

1. if ``<dest>/<folder>`` already exists, nothing is done;
2. the archive is a local ``url`` (a path or ``file://``), else ``<dest>/<archive>`` left by an
   earlier run when no ``url`` is given, else downloaded: a network ``url`` always wins over a
   leftover archive, which the new download replaces;
3. a download goes into ``<dest>/<archive>.part`` with HTTP ``Range`` requests, so an
   interrupted download resumes where it stopped (a ``206`` reply appends, a ``200`` reply to a
   ranged request restarts from zero and the log says the server ignored the range, a ``416``
   reply means the file is complete); the size is checked against the server's
   ``Content-Length`` / ``Content-Range`` total; once complete the ``.part`` file is renamed to
   ``<dest>/<archive>``.  A network problem keeps the ``.part`` file and tries the next mirror; a
   full disk (or no permission) stops at once with one line naming the ``.part`` file, the free
   space and the bytes it really holds;
4. the archive type is told by its magic bytes (zip, tar, gzip/bzip2/xz-compressed tar), never by
   its name; every member is checked first, and an archive with a member that would land outside
   the destination (absolute path, ``..``, symbolic or hard link, device file, FIFO) is refused
   with nothing extracted; a refused archive (unknown type, corrupt, unsafe member) that was
   downloaded is deleted, so no later run reuses it, and the error says so (a local ``url`` file
   is left as it is);
5. the members are extracted into a temporary folder inside ``dest`` (a zip is ``testzip()``-ed
   first, a tar is read in full by the extraction), which is then renamed to ``<dest>/<folder>``:
   a failure at any point leaves no half folder behind (when the disk fills up, the archive is kept
   for the next run);
6. the downloaded archive is deleted unless ``keep_archive`` (a local ``--url`` file is never
   deleted).

Layout of the result: ``ModelNet10.zip`` holds a top folder ``ModelNet10/`` (classes below it).
The manually aligned ModelNet40 tar of the ORION project (Sedaghat et al.) holds the class folders
at its top level (``airplane/train/airplane_0001.off`` ...); as the original script did, they are
put under ``ModelNet40/``.  In general: if the archive's top level is a single folder named as the
dataset folder (or one of ``Dataset.top_names``), that folder becomes ``<dest>/<folder>``;
otherwise the whole extracted tree does.  macOS ``__MACOSX/`` resource-fork folders are skipped.
"""
from __future__ import annotations

import contextlib
import http.client
import lzma
import os
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from tf3dgan.errors import Tf3dganError, WriteError, write_error

CHUNK = 1 << 20
USER_AGENT = "tf3dgan-download-data"


class DownloadError(Tf3dganError):
    """A download that failed (network error, HTTP error status, size mismatch)."""


class ArchiveError(Tf3dganError):
    """An archive that is refused: corrupt, of an unknown type, or with members that are refused.

    (A problem of the destination while extracting is a :class:`~tf3dgan.errors.WriteError`; one
    reading the archive file is a plain :class:`~tf3dgan.errors.Tf3dganError`: the archive itself
    may be fine.)"""


class UnsafeArchiveError(ArchiveError):
    """An archive refused for a member that would land outside the destination (or is a link or device)."""


@dataclass(frozen=True)
class Dataset:
    key: str                    # the --dataset value
    title: str                  # for messages and the interactive menu
    urls: tuple[str, ...]       # tried in order
    archive: str                # file name of the downloaded archive in dest
    folder: str                 # the folder the dataset ends up in: <dest>/<folder>
    size: str                   # approximate archive size, for the confirmation prompt
    unpacked: str               # approximate unpacked size
    top_names: tuple[str, ...] = ()   # other names of the archive's own top folder


DATASETS: dict[str, Dataset] = {
    "modelnet10": Dataset(
        key="modelnet10",
        title="ModelNet10 (10 classes, orientation-aligned; Princeton 3D ShapeNets)",
        urls=("http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
              "http://vision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip"),
        archive="ModelNet10.zip", folder="ModelNet10",
        size="about 451 MB", unpacked="about 2 GB"),
    "modelnet40-aligned": Dataset(
        key="modelnet40-aligned",
        title="manually aligned ModelNet40 (40 classes; ORION, Sedaghat et al.)",
        urls=("https://lmb.informatik.uni-freiburg.de/resources/datasets/ORION/modelnet40_manually_aligned.tar",),
        archive="modelnet40_manually_aligned.tar", folder="ModelNet40",
        size="about 2 GB", unpacked="over 9 GB", top_names=("modelnet40_manually_aligned",)),
}


# ----------------------------------------------------------------------------------- download

def local_source(url: str) -> Path | None:
    """The local file named by ``url`` (a path or a ``file://`` URL), or None for a network URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(url)   # no scheme (or a Windows drive letter): a path


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, BaseException):
            return _describe(exc.reason)
        return str(exc.reason)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


def _open_part(part: Path, mode: str):
    """The ``.part`` file, opened for writing (one place, so the tests can fill the disk)."""
    return open(part, mode)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove_part(part: Path) -> None:
    try:
        part.unlink()
    except OSError as e:
        raise write_error(part, e) from None


def _part_write_error(part: Path, exc: OSError, total: int | None) -> WriteError:
    """One line for a failed write of the ``.part`` file, with the byte count it really holds."""
    size = _size_of(part)
    return WriteError(f"{write_error(part, exc)} (it holds {size} of {total if total is not None else '?'} "
                      f"bytes and is kept: the next run resumes at byte {size})")


def download(url: str, part: str | os.PathLike, progress: bool | None = None, timeout: float = 60.0,
             log: Callable[[str], None] | None = None, _restarted: bool = False) -> int:
    """Fetch ``url`` into the file ``part``, resuming from its current size; return the total size.

    ``log`` (if given) gets one line saying what happens: a fresh download, a resume at byte N, or a
    restart from byte 0 when the server ignores the range request (a ``200`` reply) or answers it
    with another range.  Raises :class:`DownloadError` (one line) on any network error, HTTP error
    status or short transfer, and :class:`~tf3dgan.errors.WriteError` when ``part`` cannot be
    written (full disk, no permission); what arrived stays in ``part`` for the next try, and the
    byte counts in the messages are the file's real size.
    """
    from tqdm import tqdm

    say = log or (lambda msg: None)
    part = Path(part)
    have = _size_of(part) if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    else:
        say(f"downloading {url} to {part}")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # the range starts at or past the end: complete, unless the server says otherwise
            m = _UNSATISFIED_RANGE.match(e.headers.get("Content-Range", "") or "")
            e.close()
            if m and int(m.group(1)) != have and not _restarted:
                say(f"{part} ({have} bytes, from an earlier run) is longer than {url} ({m.group(1)} bytes): "
                    "not this file; restarting from byte 0")
                _remove_part(part)
                return download(url, part, progress, timeout, log, _restarted=True)
            say(f"{part} is already complete ({have} bytes)")
            return have
        e.close()
        raise DownloadError(f"could not download {url}: {_describe(e)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"could not download {url}: {_describe(e)}") from None

    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            got = response.headers.get("Content-Range")
            m = _CONTENT_RANGE.match(got or "")
            if not m or int(m.group(1)) != have:
                if _restarted:
                    raise DownloadError(f"could not download {url}: the server answered the range request "
                                        f"'bytes={have}-' with the range '{got}'")
                say(f"the server answered the range request 'bytes={have}-' with the range '{got}'; "
                    f"restarting from byte 0 (into {part})")
                _remove_part(part)
                return download(url, part, progress, timeout, log, _restarted=True)
            total = int(m.group(3)) if m.group(3) != "*" else None
            start, mode = have, "ab"
            say(f"resuming {url} at byte {have} of {total if total is not None else '?'} (into {part})")
        else:          # 200: the whole file, also when a range was asked for (the server ignores ranges)
            total, start, mode = length, 0, "wb"
            if have:
                say(f"{url}: the server ignored the range request 'bytes={have}-' (it sent the whole file); "
                    f"restarting from byte 0 (the {have} bytes in {part} from an earlier run are replaced)")
        try:
            f = _open_part(part, mode)
        except OSError as e:
            raise _part_write_error(part, e, total) from None
        failed: OSError | None = None           # the write that failed: a problem of the disk
        broken: BaseException | None = None     # the read that failed: a problem of the network
        try:
            with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=part.name[:-len(".part")] or part.name,
                      disable=None if progress is None else not progress, leave=False) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        broken = e
                        break
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:
                        failed = e
                        break
                    bar.update(len(chunk))
        finally:
            try:
                f.close()
            except OSError as e:                # the last buffered bytes did not fit
                failed = failed or e
    if failed is not None:
        raise _part_write_error(part, failed, total)
    size = _size_of(part)                       # what the file really holds, not what was sent
    if broken is not None or (total is not None and size != total):
        why = _describe(broken) if broken is not None else "connection closed early"
        raise DownloadError(f"download of {url} stopped after {size} of {total if total is not None else '?'} "
                            f"bytes: {why} (the partial file {part} is kept; run again to resume)")
    return size


def fetch(urls: Iterable[str], archive: str | os.PathLike, progress: bool | None = None, timeout: float = 60.0,
          log: Callable[[str], None] = print) -> Path:
    """Download the first of ``urls`` that works to ``archive`` (through ``<archive>.part``).

    A network problem moves on to the next URL; a write problem (full disk) stops at once."""
    archive = Path(archive)
    part = archive.with_name(archive.name + ".part")
    errors = []
    for url in urls:
        try:
            download(url, part, progress=progress, timeout=timeout, log=log)
        except DownloadError as e:
            errors.append(str(e))
            continue
        try:
            os.replace(part, archive)
        except OSError as e:
            raise write_error(archive, e) from None
        return archive
    kept = f"; the partial file {part} is kept, run again to resume" if _size_of(part) else ""
    if kept:
        errors = [e.split(" (the partial file")[0] for e in errors]
    raise DownloadError("; ".join(errors) + kept)


# ----------------------------------------------------------------------------------- archives

def archive_format(path: str | os.PathLike) -> str | None:
    """``"zip"``, ``"tar"``, ``"tar.gz"``, ``"tar.bz2"`` or ``"tar.xz"`` from the file's magic bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:3] == b"BZh":
        return "tar.bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "tar.xz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _member_problem(name: str) -> str | None:
    """Why the member path ``name`` would escape the destination, or None when it is safe."""
    if not name or "\x00" in name:
        return "an empty or invalid name"
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        return "an absolute path"
    if ".." in PurePosixPath(unified).parts:
        return "a '..' path that leaves the destination"
    return None


def _relative(name: str) -> PurePosixPath | None:
    """The member's path inside the destination; None for the archive's root (``./``)."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in (".", "")]
    return PurePosixPath(*parts) if parts else None


def _skipped(rel: PurePosixPath | None) -> bool:
    return rel is None or rel.parts[0] == "__MACOSX"


def _zip_type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16          # Unix mode; its type bits are 0 when not recorded
    if stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR):
        return None
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
    return f"{kind} (only plain files and folders are extracted)"


def _tar_type_problem(info: tarfile.TarInfo) -> str | None:
    if info.isreg() or info.isdir():
        return None
    if info.issym():
        kind = f"a symbolic link (to '{info.linkname}')"
    elif info.islnk():
        kind = f"a hard link (to '{info.linkname}')"
    else:
        kind = "a device file, FIFO or other special file"
    return kind + " (only plain files and folders are extracted)"


def _checked_entries(members, name_of, type_problem, label: str) -> list:
    """``(member, relative path)`` of the members to extract; any unsafe member refuses the archive."""
    entries = []
    for info in members:
        name = name_of(info)
        problem = _member_problem(name) or type_problem(info)
        if problem:
            raise UnsafeArchiveError(f"refusing to extract {label}: member '{name}' is {problem}; "
                                     "nothing was extracted")
        rel = _relative(name)
        if not _skipped(rel):
            entries.append((info, rel))
    return entries


def _zip_entries(zf: zipfile.ZipFile, label: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    return _checked_entries(zf.infolist(), lambda i: i.filename, _zip_type_problem, label)


def _tar_entries(tf: tarfile.TarFile, label: str) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    return _checked_entries(tf.getmembers(), lambda i: i.name, _tar_type_problem, label)


def _check_tar_end(tf: tarfile.TarFile, label: str) -> None:
    """Read the tar stream to its end: only zero blocks may follow the last member.

    ``tarfile`` takes a damaged header after the first one for the end of the archive, so a
    corrupt or truncated tar would otherwise pass as a shorter one.  Reading to the end also
    makes a compressed stream check its own CRC.
    """
    last = tf.members[-1].name if tf.members else None
    tf.fileobj.seek(tf.offset)
    while True:
        chunk = tf.fileobj.read(CHUNK)
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            after = f"after the member '{last}'" if last else "at its start"
            raise ArchiveError(f"{label} is corrupt: a damaged tar header {after}")


def _target(root: Path, rel: PurePosixPath, label: str, name: str) -> Path:
    target = root.joinpath(*rel.parts)
    if os.path.commonpath([os.path.realpath(target), os.path.realpath(root)]) != os.path.realpath(root):
        raise UnsafeArchiveError(f"refusing to extract {label}: member '{name}' would land outside the "
                                 "destination; nothing was extracted")
    return target


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e) from None


def _write_member(src, target: Path) -> None:
    """Copy ``src`` to ``target``: a failed read is the archive's (it propagates), a failed write the disk's."""
    _mkdir(target.parent)
    try:
        out = open(target, "wb")
    except OSError as e:
        raise write_error(target, e) from None
    failed: OSError | None = None
    try:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as e:
                failed = e
                break
    finally:
        try:
            out.close()
        except OSError as e:
            failed = failed or e
    if failed is not None:
        raise write_error(target, failed)


def extract_archive(archive: str | os.PathLike, into: str | os.PathLike, label: str | None = None) -> str:
    """Check ``archive`` in full and extract its plain files and folders into the folder ``into``.

    Returns the archive format.  Raises :class:`ArchiveError` (one line) for an unknown type, a
    corrupt archive or a refused member; callers extract into a temporary folder (see :func:`unpack`).
    """
    archive, into = Path(archive), Path(into)
    label = label or str(archive)
    fmt = archive_format(archive)
    if fmt is None:
        raise ArchiveError(f"{label} is not a zip, tar or compressed tar archive (unknown magic bytes)")
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                entries = _zip_entries(zf, label)
                bad = zf.testzip()
                if bad is not None:
                    raise ArchiveError(f"{label} is corrupt: the member '{bad}' fails its CRC check")
                for info, rel in entries:
                    target = _target(into, rel, label, info.filename)
                    if info.is_dir():
                        _mkdir(target)
                    else:
                        with zf.open(info) as src:
                            _write_member(src, target)
        else:
            with tarfile.open(archive, "r:*") as tf:
                entries = _tar_entries(tf, label)
                _check_tar_end(tf, label)
                for info, rel in entries:
                    target = _target(into, rel, label, info.name)
                    if info.isdir():
                        _mkdir(target)
                    else:
                        src = tf.extractfile(info)
                        with contextlib.closing(src):
                            _write_member(src, target)
    except Tf3dganError:       # ArchiveError, or a WriteError of the destination
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, OSError, ValueError,
            NotImplementedError, zlib.error, lzma.LZMAError) as e:
        if isinstance(e, OSError) and e.errno is not None and getattr(e, "filename", None):
            # a file that could not be opened or read (permissions, I/O error): not the archive's content
            raise Tf3dganError(f"could not extract {label}: {e.filename}: {e.strerror}") from None
        raise ArchiveError(f"{label} is corrupt or truncated ({fmt}: {e or type(e).__name__})") from None
    return fmt


def unpack(archive: str | os.PathLike, dest: str | os.PathLike, folder: str, top_names: Iterable[str] = (),
           label: str | None = None) -> Path:
    """Extract ``archive`` so that its dataset lands as ``<dest>/<folder>``, atomically.

    Extraction goes to a temporary folder inside ``dest``, renamed into place at the end; on any
    error the temporary folder is removed and ``<dest>/<folder>`` is not created.
    """
    dest = Path(dest)
    final = dest / folder
    _mkdir(dest)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-extract-", dir=dest))
    except OSError as e:
        raise write_error(dest, e) from None
    try:
        extract_archive(archive, tmp, label)
        tops = [p for p in tmp.iterdir()]
        names = {folder.lower(), *(n.lower() for n in top_names)}
        if len(tops) == 1 and tops[0].is_dir() and tops[0].name.lower() in names:
            source = tops[0]
        else:
            source = tmp
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)      # mkdtemp makes 0700
        if final.exists():
            raise Tf3dganError(f"{final} appeared while {label or archive} was being extracted; left it alone")
        os.rename(source, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------- the whole flow

@dataclass
class Result:
    dataset: Dataset
    folder: Path
    already: bool = False
    archive: Path | None = None        # the kept archive, if any
    files: int = 0
    bytes: int = 0

    def summary(self) -> str:
        """The one line ``tools/download_data.py`` ends with."""
        where = self.folder.resolve()
        if self.already:
            return f"{self.dataset.folder} is already there: {where} exists, nothing to do (delete it to download again)"
        kept = f"; the archive is kept at {self.archive.resolve()}" if self.archive else ""
        return f"wrote {self.dataset.folder}: {self.files} files, {human_size(self.bytes)} in {where}{kept}"


def human_size(n: int) -> str:
    """``n`` bytes as ``'4.4 KB'``, ``'451.2 MB'``, ``'2.0 GB'`` (powers of 1000)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def tree_size(folder: Path) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(folder):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(root, n))
    return files, size


def needs_download(dataset: Dataset, dest: str | os.PathLike, url: str | None = None) -> bool:
    """Whether :func:`prepare` would go to the network (for asking the user first)."""
    dest = Path(dest)
    if (dest / dataset.folder).exists():
        return False
    if url is not None:                 # --url wins over an archive left by an earlier run
        return local_source(url) is None
    return not (dest / dataset.archive).is_file()


def _discard(archive: Path, unsafe: bool) -> str:
    """Delete the refused ``archive`` (ours: downloaded) so that no later run reuses it; say so."""
    try:
        archive.unlink()
    except FileNotFoundError:
        return f"{archive} is gone already"
    except OSError as e:
        return f"could not delete {archive} ({_describe(e)}): delete it by hand before running again"
    if unsafe:      # downloading it again would most likely fetch the same file
        return f"deleted {archive}: get the dataset from another source (--url a mirror or a local archive)"
    return (f"deleted {archive}: run again to download it afresh, or pass --url for another mirror "
            "or a local archive")


def prepare(dataset: Dataset | str, dest: str | os.PathLike = ".", url: str | None = None, keep_archive: bool = False,
            progress: bool | None = None, timeout: float = 60.0, log: Callable[[str], None] = print) -> Result:
    """Make ``<dest>/<dataset.folder>``: download (resumably), verify and unpack; see the module text.

    ``url`` always wins: a network URL is downloaded even when ``<dest>/<archive>`` was left by an
    earlier run (it is replaced), and a local file is unpacked as it is (and never deleted).
    Without ``url`` a leftover ``<dest>/<archive>`` is used.  A downloaded archive that is refused
    (corrupt, unknown type, unsafe member) is deleted, and the error says so; one that cannot be
    extracted for lack of space or permission is kept.
    """
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise Tf3dganError(f"unknown dataset '{dataset}': choose one of {', '.join(DATASETS)}")
        dataset = DATASETS[dataset]
    dest = Path(dest)
    final = dest / dataset.folder
    if final.exists():
        return Result(dataset, final, already=True)
    if dest.exists() and not dest.is_dir():
        raise Tf3dganError(f"--dest {dest} is not a folder")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Tf3dganError(f"cannot create the destination folder {dest}: {e.strerror}") from None

    for stale in dest.glob(f".{dataset.folder}-extract-*"):
        log(f"removing {stale}, left by an interrupted extraction")
        shutil.rmtree(stale, ignore_errors=True)

    local = local_source(url) if url is not None else None
    owned = True           # whether the archive is ours to delete
    if local is not None:
        if not local.is_file():
            raise DownloadError(f"--url {url}: no such file")
        archive, owned = local, False
        log(f"using the local archive {local}")
    else:
        archive = dest / dataset.archive
        if url is None and archive.is_file():
            log(f"using the archive already downloaded: {archive}")
        else:
            if archive.exists():
                log(f"not using {archive}, left by an earlier run: --url {url} is downloaded to replace it")
            fetch([url] if url else dataset.urls, archive, progress=progress, timeout=timeout, log=log)

    log(f"checking and extracting {archive} ...")
    try:
        unpack(archive, dest, dataset.folder, dataset.top_names, label=str(archive))
    except ArchiveError as e:
        if not owned:
            raise                       # the user's own file: left as it is
        raise type(e)(f"{e}; {_discard(archive, isinstance(e, UnsafeArchiveError))}") from None
    except WriteError as e:
        if not owned:
            raise WriteError(f"{e} (while extracting {archive})") from None
        reuse = "run again without --url to unpack it" if url else "the next run unpacks it"
        raise WriteError(f"{e} (while extracting {archive}, which is kept: {reuse} without downloading "
                         "it again)") from None
    files, size = tree_size(final)
    kept = None
    if owned and not keep_archive:
        try:
            archive.unlink()
        except OSError as e:
            log(f"warning: could not delete the archive {archive} ({_describe(e)}); delete it by hand")
    elif owned:
        kept = archive
    return Result(dataset, final, archive=kept, files=files, bytes=size)

"""tools/download_data.py and tf3dgan.data.modelnet against a local HTTP server (no internet needed).

The archives are built here from three real ModelNet10 meshes (tests/fixtures/download/*.off).
"""
from __future__ import annotations

import errno
import http.server
import io
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from _cli import FIXTURES, REPO, error_line, tool, tool_env

from tf3dgan.data import modelnet
from tf3dgan.data.modelnet import ArchiveError, DownloadError
from tf3dgan.errors import Tf3dganError, WriteError

MESHES = {  # path in the archive -> fixture file (byte copies of shared/data/modelnet_sample)
    "ModelNet10/table/train/table_0151.off": "table_0151.off",
    "ModelNet10/desk/train/desk_0011.off": "desk_0011.off",
    "ModelNet10/monitor/train/monitor_0249.off": "monitor_0249.off",
}
README = b"A small ModelNet10-layout archive for the tests of tools/download_data.py.\n"


def tree() -> dict[str, bytes]:
    files = {name: (FIXTURES / "download" / src).read_bytes() for name, src in MESHES.items()}
    files["ModelNet10/README.txt"] = README
    return files


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(files: dict[str, bytes], extra: list[tarfile.TarInfo] = (), compress: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:" + compress) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def assert_tree(folder: Path, files: dict[str, bytes], prefix: str = "ModelNet10/") -> None:
    found = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert found == {k[len(prefix):]: v for k, v in files.items()}


# ------------------------------------------------------------------------------------- the server

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):   # quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if srv.status:
            self.send_error(srv.status)
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if m and srv.ranges_ok:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drop_after is not None:
            cut, srv.drop_after = srv.drop_after, None       # only the first request is cut
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.ranges, srv.status, srv.drop_after, srv.ranges_ok = {}, [], None, None, True
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def no_stray_files(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# ------------------------------------------------------------------------------------- the CLI

def test_cli_download_extract_and_idempotent(server, tmp_path):
    files = tree()
    server.files["/ModelNet10.zip"] = make_zip(files)
    dest = tmp_path / "data"
    proc = tool("download_data", "--dataset", "modelnet10", "-y", "--dest", dest,
                "--url", server.url("/ModelNet10.zip"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert_tree(dest / "ModelNet10", files)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("wrote ModelNet10: 4 files, 21.6 KB in") and str((dest / "ModelNet10").resolve()) in last
    assert no_stray_files(dest) == ["ModelNet10"]          # archive deleted, no .part, no temp folder
    assert server.ranges == [None]

    again = tool("download_data", "--dataset", "modelnet10", "--dest", dest,
                 "--url", server.url("/ModelNet10.zip"), timeout=60)   # no -y needed: nothing to download
    assert again.returncode == 0, again.stderr
    assert "already" in again.stdout and len(server.ranges) == 1


def test_cli_keep_archive_and_local_path(server, tmp_path):
    files = tree()
    local = tmp_path / "mirror" / "anything.bin"
    local.parent.mkdir()
    local.write_bytes(make_tar(files, compress="gz"))
    dest = tmp_path / "d"
    proc = tool("download_data", "--dataset", "modelnet10", "--dest", dest, "--url", local, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert_tree(dest / "ModelNet10", files)
    assert local.exists() and no_stray_files(dest) == ["ModelNet10"]   # the user's file is never deleted

    server.files["/m.zip"] = make_zip(files)
    dest2 = tmp_path / "d2"
    proc = tool("download_data", "--dataset", "modelnet10", "-y", "--dest", dest2, "--keep-archive",
                "--url", server.url("/m.zip"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert no_stray_files(dest2) == ["ModelNet10", "ModelNet10.zip"]
    assert "kept" in proc.stdout.splitlines()[-1]


def _run_without_tty(*args):
    cmd = [sys.executable, str(REPO / "tools" / "download_data.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=tool_env(),
                          stdin=subprocess.DEVNULL)


def test_cli_without_tty_asks_for_flags(tmp_path):
    line = error_line(_run_without_tty("--dest", tmp_path))
    assert "--dataset modelnet10" in line and "--yes" in line
    line = error_line(_run_without_tty("--dataset", "modelnet40-aligned", "--dest", tmp_path))
    assert "-y/--yes" in line and "about 2 GB" in line
    assert no_stray_files(tmp_path) == []


def test_cli_http_404_and_interrupted_download_resumes(server, tmp_path):
    proc = tool("download_data", "--dataset", "modelnet10", "-y", "--dest", tmp_path,
                "--url", server.url("/missing.zip"), timeout=60)
    line = error_line(proc)
    assert "HTTP 404" in line and "/missing.zip" in line
    assert no_stray_files(tmp_path) == []

    files = tree()
    data = make_zip(files)
    server.files["/ModelNet10.zip"] = data
    server.drop_after = len(data) // 2
    dest = tmp_path / "x"
    proc = tool("download_data", "--dataset", "modelnet10", "-y", "--dest", dest,
                "--url", server.url("/ModelNet10.zip"), timeout=60)
    line = error_line(proc)
    part = dest / "ModelNet10.zip.part"
    assert "kept" in line and str(part) in line and "resume" in line
    assert part.read_bytes() == data[:len(data) // 2]
    assert no_stray_files(dest) == ["ModelNet10.zip.part"]

    proc = tool("download_data", "--dataset", "modelnet10", "-y", "--dest", dest,
                "--url", server.url("/ModelNet10.zip"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert server.ranges[-1] == f"bytes={len(data) // 2}-"
    assert_tree(dest / "ModelNet10", files)
    assert no_stray_files(dest) == ["ModelNet10"]


# ------------------------------------------------------------------------------------- the library

def test_download_200_to_range_restarts_and_416_means_complete(server, tmp_path):
    data = make_zip(tree())
    server.files["/a.zip"] = data
    part = tmp_path / "a.zip.part"
    part.write_bytes(b"garbage-not-a-prefix")
    server.ranges_ok = False          # the server ignores Range: a 200 reply restarts from zero
    assert modelnet.download(server.url("/a.zip"), part, progress=False) == len(data)
    assert part.read_bytes() == data and server.ranges == ["bytes=20-"]
    server.ranges_ok = True
    assert modelnet.download(server.url("/a.zip"), part, progress=False) == len(data)   # 416: complete
    assert part.read_bytes() == data


def test_server_errors_connection_refused_and_mirror_fallback(server, tmp_path):
    server.status = 500
    with pytest.raises(DownloadError, match=r"HTTP 500"):
        modelnet.download(server.url("/a.zip"), tmp_path / "a.part", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/a.zip"       # bound, not listening: refused
    with pytest.raises(DownloadError, match="connection refused"):
        modelnet.download(dead, tmp_path / "a.part", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()                                                  # accepts, never answers
        with pytest.raises(DownloadError, match="timed out"):
            modelnet.download(f"http://127.0.0.1:{s.getsockname()[1]}/a.zip", tmp_path / "a.part",
                              progress=False, timeout=0.3)
    server.status = None
    server.files["/a.zip"] = b"PK\x05\x06" + bytes(18)              # an empty zip
    got = modelnet.fetch([dead, server.url("/a.zip")], tmp_path / "a.zip", progress=False, log=lambda m: None)
    assert got.read_bytes() == server.files["/a.zip"]


def test_corrupt_archive_is_refused_and_nothing_extracted(tmp_path):
    files = tree()
    data = bytearray(make_zip(files))
    i = data.index(b"OFF", 100)             # flip a byte inside a stored member: CRC error
    data[i] = ord("X")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ModelNet10.zip").write_bytes(bytes(data))      # as if downloaded: it is used, then deleted
    with pytest.raises(ArchiveError, match=r"ModelNet10\.zip is corrupt.*run again") as e:
        modelnet.prepare("modelnet10", dest, log=lambda m: None)
    assert "\n" not in str(e.value)
    assert no_stray_files(dest) == []       # no half folder, no temp folder; the bad download is deleted

    trunc = tmp_path / "t.tar.gz"
    trunc.write_bytes(make_tar(files, compress="gz")[:-200])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        modelnet.prepare("modelnet10", dest, url=str(trunc), log=lambda m: None)
    assert no_stray_files(dest) == [] and trunc.exists()

    gz = bytearray(make_tar(files, compress="gz"))
    gz[len(gz) // 2] ^= 0xFF                                 # bad deflate data or a CRC mismatch
    plain = bytearray(make_tar(files))
    second = tarfile.open(fileobj=io.BytesIO(plain)).getmembers()[1].offset
    plain[second + 5] ^= 0xFF                                # a damaged header in the middle of a plain tar
    cut = bytes(plain[:second + 100])                        # a plain tar cut inside a header
    for bad in (gz, plain, cut):
        (tmp_path / "bad").write_bytes(bytes(bad))
        with pytest.raises(ArchiveError, match="corrupt"):
            modelnet.prepare("modelnet10", dest, url=str(tmp_path / "bad"), log=lambda m: None)
        assert no_stray_files(dest) == []

    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>not found</html>" * 30)
    with pytest.raises(ArchiveError, match="not a zip, tar"):
        modelnet.prepare("modelnet10", dest, url=junk.as_uri(), log=lambda m: None)
    assert no_stray_files(dest) == []


def test_macosx_folder_skipped_and_stale_temp_removed(tmp_path):
    files = tree()
    archive = tmp_path / "m.zip"
    archive.write_bytes(make_zip({**files, "__MACOSX/ModelNet10/._README.txt": b"junk"}))
    dest = tmp_path / "dest"
    (dest / ".ModelNet10-extract-old" / "x").mkdir(parents=True)
    logs = []
    modelnet.prepare("modelnet10", dest, url=str(archive), log=logs.append)
    assert_tree(dest / "ModelNet10", files)
    assert no_stray_files(dest) == ["ModelNet10"] and any("interrupted extraction" in m for m in logs)


@pytest.mark.parametrize("compress", ["", "gz", "bz2", "xz"])
def test_tar_detected_by_magic_bytes_whatever_the_name(tmp_path, compress):
    files = tree()
    archive = tmp_path / "ModelNet10.zip"           # a tar named .zip
    archive.write_bytes(make_tar(files, compress=compress))
    assert modelnet.archive_format(archive) == ("tar." + compress if compress else "tar")
    dest = tmp_path / "dest"
    result = modelnet.prepare("modelnet10", dest, url=f"file://{archive}", log=lambda m: None)
    assert result.files == 4 and not result.already
    assert_tree(dest / "ModelNet10", files)


def test_modelnet40_tar_without_top_folder_lands_in_ModelNet40(tmp_path):
    files = {k.replace("ModelNet10/", ""): v for k, v in tree().items()}   # classes at the top, as the ORION tar
    archive = tmp_path / "modelnet40_manually_aligned.tar"
    archive.write_bytes(make_tar(files))
    result = modelnet.prepare("modelnet40-aligned", tmp_path, keep_archive=True, log=lambda m: None)
    assert result.folder == tmp_path / "ModelNet40" and result.archive == archive
    assert_tree(tmp_path / "ModelNet40", files, prefix="")
    assert stat.S_IMODE(os.stat(tmp_path / "ModelNet40").st_mode) != 0o700
    assert modelnet.prepare("modelnet40-aligned", tmp_path).already


def _evil_zip(name: str, symlink: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ModelNet10/table/train/table_0151.off", tree()["ModelNet10/table/train/table_0151.off"])
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if symlink else "evil")
    return buf.getvalue()


def _tar_link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


HOSTILE = {
    "zip-dotdot": (lambda: _evil_zip("../evil.off"), "'..' path"),
    "zip-dotdot-inside": (lambda: _evil_zip("ModelNet10/../../evil.off"), "'..' path"),
    "zip-absolute": (lambda: _evil_zip("/tmp/tf3dgan_evil.off"), "absolute path"),
    "zip-symlink": (lambda: _evil_zip("ModelNet10/link", symlink=True), "symbolic link"),
    "tar-dotdot": (lambda: make_tar({**tree(), "../evil.off": b"evil"}), "'..' path"),
    "tar-absolute": (lambda: make_tar({**tree(), "/tmp/tf3dgan_evil.off": b"evil"}), "absolute path"),
    "tar-symlink": (lambda: make_tar(tree(), [_tar_link("ModelNet10/link", tarfile.SYMTYPE, "/etc")]),
                    "symbolic link"),
    "tar-hardlink": (lambda: make_tar(tree(), [_tar_link("ModelNet10/h", tarfile.LNKTYPE, "/etc/passwd")]),
                     "hard link"),
    "tar-device": (lambda: make_tar(tree(), [_tar_link("ModelNet10/dev", tarfile.CHRTYPE)]), "device file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused(tmp_path, case):
    make, why = HOSTILE[case]
    archive = tmp_path / "in" / "a.zip"
    archive.parent.mkdir()
    archive.write_bytes(make())
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(ArchiveError, match="refusing to extract") as e:
        modelnet.prepare("modelnet10", dest, url=str(archive), log=lambda m: None)
    msg = str(e.value)
    assert why in msg and "nothing was extracted" in msg and "\n" not in msg
    assert no_stray_files(dest) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.zip", "dest", "in", "sub"]
    assert not Path("/tmp/tf3dgan_evil.off").exists()


def test_local_url_missing_and_bad_dest(tmp_path):
    with pytest.raises(DownloadError, match="no such file"):
        modelnet.prepare("modelnet10", tmp_path, url=str(tmp_path / "nope.zip"), log=lambda m: None)
    (tmp_path / "f").write_text("x")
    with pytest.raises(Tf3dganError, match="not a folder"):
        modelnet.prepare("modelnet10", tmp_path / "f", url=str(tmp_path / "nope.zip"), log=lambda m: None)


def test_interactive_flow(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import download_data
    finally:
        sys.path.pop(0)
    archive = tmp_path / "ModelNet10.zip"
    archive.write_bytes(make_zip(tree()))
    answers = iter(["", "3", "1", "maybe", "n"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", type("TTY", (), {"isatty": lambda self: True})())
    dest = tmp_path / "out"
    monkeypatch.setattr(modelnet, "needs_download", lambda *a: True)
    monkeypatch.setattr(download_data, "needs_download", lambda *a: True)
    assert download_data.main(["--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "please reply with 1 or 2" in out and "please reply with y or n" in out and "cancelled" in out
    assert not dest.exists()

    answers = iter(["2", "y"])
    monkeypatch.setattr(download_data, "prepare", lambda ds, *a, **k: modelnet.Result(ds, dest / ds.folder, True))
    assert download_data.main(["--dest", str(dest)]) == 0
    assert "ModelNet40 is already there" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- refused archives, --url

def test_refused_download_is_deleted_and_a_new_url_wins(server, tmp_path):
    files = tree()
    server.files["/evil.zip"] = _evil_zip("../evil.off")
    server.files["/good.zip"] = make_zip(files)
    dest = tmp_path / "d"
    args = ("download_data", "--dataset", "modelnet10", "-y", "--no-progress", "--dest", dest)
    line = error_line(tool(*args, "--url", server.url("/evil.zip"), timeout=60))
    archive = dest / "ModelNet10.zip"
    assert "refusing to extract" in line and "'..' path" in line and "nothing was extracted" in line
    assert f"deleted {archive}: get the dataset from another source (--url" in line
    assert no_stray_files(dest) == []                  # not left to be reused by the next run

    proc = tool(*args, "--url", server.url("/good.zip"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert_tree(dest / "ModelNet10", files)
    assert server.ranges == [None, None] and no_stray_files(dest) == ["ModelNet10"]


def test_url_wins_over_a_leftover_archive(server, tmp_path):
    """An archive left in --dest (an earlier --keep-archive, an older version of the tool) is not
    used when --url is given; without --url it is, and when refused it is deleted."""
    files = tree()
    other = {"ModelNet10/README.txt": b"another dataset\n"}
    server.files["/new.zip"] = make_zip(files)
    dest = tmp_path / "d"
    dest.mkdir()
    archive = dest / "ModelNet10.zip"
    archive.write_bytes(make_zip(other))
    assert modelnet.needs_download(modelnet.DATASETS["modelnet10"], dest, server.url("/new.zip"))
    logs = []
    modelnet.prepare("modelnet10", dest, url=server.url("/new.zip"), progress=False, log=logs.append)
    assert_tree(dest / "ModelNet10", files)               # the new URL's files, not the leftover's
    assert any("not using" in m and str(archive) in m for m in logs)
    assert no_stray_files(dest) == ["ModelNet10"]

    dest2 = tmp_path / "d2"
    dest2.mkdir()
    (dest2 / "ModelNet10.zip").write_bytes(make_zip(other))
    assert not modelnet.needs_download(modelnet.DATASETS["modelnet10"], dest2)
    modelnet.prepare("modelnet10", dest2, log=lambda m: None)    # no --url: the leftover is used
    assert_tree(dest2 / "ModelNet10", other)

    dest3 = tmp_path / "d3"
    dest3.mkdir()
    (dest3 / "ModelNet10.zip").write_bytes(make_tar(tree(), [_tar_link("ModelNet10/l", tarfile.SYMTYPE, "/")]))
    with pytest.raises(ArchiveError, match="symbolic link") as e:
        modelnet.prepare("modelnet10", dest3, log=lambda m: None)
    assert f"deleted {dest3 / 'ModelNet10.zip'}" in str(e.value) and "\n" not in str(e.value)
    assert no_stray_files(dest3) == []


def test_refused_local_archive_is_never_deleted(tmp_path):
    mine = tmp_path / "mine" / "ModelNet10.zip"
    mine.parent.mkdir()
    evil = _evil_zip("/tmp/tf3dgan_evil.off")
    mine.write_bytes(evil)
    dest = tmp_path / "d"
    for where in (str(mine), mine.as_uri()):
        line = error_line(tool("download_data", "--dataset", "modelnet10", "--dest", dest, "--url", where,
                               timeout=60))
        assert "absolute path" in line and "deleted" not in line
        assert mine.read_bytes() == evil and no_stray_files(dest) == []
    # the user's archive is in --dest under the catalogue name: still theirs
    dest.mkdir(exist_ok=True)
    inside = dest / "ModelNet10.zip"
    inside.write_bytes(mine.read_bytes())
    with pytest.raises(ArchiveError, match="absolute path") as e:
        modelnet.prepare("modelnet10", dest, url=str(inside), log=lambda m: None)
    assert "deleted" not in str(e.value) and inside.exists()


# ------------------------------------------------------------------------------------- Range replies

def test_server_ignoring_range_says_it_restarts_from_zero(server, tmp_path):
    files = tree()
    data = make_zip(files)
    server.files["/ModelNet10.zip"] = data
    server.drop_after = 5000
    dest = tmp_path / "d"
    args = ("download_data", "--dataset", "modelnet10", "-y", "--no-progress", "--dest", dest,
            "--url", server.url("/ModelNet10.zip"))
    error_line(tool(*args, timeout=60))
    assert (dest / "ModelNet10.zip.part").stat().st_size == 5000

    server.ranges_ok = False                     # answers 200 (the whole file) to 'Range: bytes=5000-'
    proc = tool(*args, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ignored the range request 'bytes=5000-'" in proc.stdout and "restarting from byte 0" in proc.stdout
    assert "resuming" not in proc.stdout
    assert server.ranges[-1] == "bytes=5000-"
    assert_tree(dest / "ModelNet10", files) and no_stray_files(dest) == ["ModelNet10"]


def test_resume_and_restart_log_lines(server, tmp_path):
    data = make_zip(tree())
    server.files["/a.zip"] = data
    part = tmp_path / "a.zip.part"
    part.write_bytes(data[:1000])
    logs = []
    assert modelnet.download(server.url("/a.zip"), part, progress=False, log=logs.append) == len(data)
    assert logs == [f"resuming {server.url('/a.zip')} at byte 1000 of {len(data)} (into {part})"]
    assert part.read_bytes() == data

    logs.clear()
    assert modelnet.download(server.url("/a.zip"), part, progress=False, log=logs.append) == len(data)
    assert logs == [f"{part} is already complete ({len(data)} bytes)"]

    part.write_bytes(data + b"trailing junk")     # longer than the file: 416 with another total
    logs.clear()
    assert modelnet.download(server.url("/a.zip"), part, progress=False, log=logs.append) == len(data)
    assert "restarting from byte 0" in logs[0] and logs[1].startswith("downloading ")
    assert part.read_bytes() == data

    part.write_bytes(data[:1000])
    server.ranges_ok = False
    logs.clear()
    assert modelnet.download(server.url("/a.zip"), part, progress=False, log=logs.append) == len(data)
    assert logs == [f"{server.url('/a.zip')}: the server ignored the range request 'bytes=1000-' (it sent the "
                    f"whole file); restarting from byte 0 (the 1000 bytes in {part} from an earlier run are replaced)"]
    assert "resuming" not in logs[0] and part.read_bytes() == data


# ------------------------------------------------------------------------------------- full disk

class _FullDisk:
    """The .part file on a disk with room for ``room`` more bytes: then ENOSPC, as the kernel does
    (the bytes that fit are written, so the file's size is not a multiple of anything sent)."""

    def __init__(self, path, mode, room):
        self.f, self.room = open(path, mode), room

    def write(self, chunk):
        n = min(len(chunk), self.room)
        self.f.write(chunk[:n])
        self.f.flush()
        self.room -= n
        if n < len(chunk):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def close(self):
        self.f.close()

    @property
    def closed(self):
        return self.f.closed


def test_full_disk_message_states_the_part_files_true_size(server, tmp_path, monkeypatch):
    files = tree()
    data = make_zip(files)
    server.files["/m.zip"] = data
    dest = tmp_path / "d"
    part = dest / "ModelNet10.zip.part"
    monkeypatch.setattr(modelnet, "_open_part", lambda path, mode: _FullDisk(path, mode, 7777))
    with pytest.raises(WriteError) as e:
        modelnet.prepare("modelnet10", dest, url=server.url("/m.zip"), progress=False, log=lambda m: None)
    msg = str(e.value)
    assert part.stat().st_size == 7777
    assert msg.startswith(f"cannot write {part}: No space left on device (")
    assert "free on that disk" in msg and f"holds 7777 of {len(data)} bytes" in msg and "resumes at byte 7777" in msg
    assert "\n" not in msg and no_stray_files(dest) == ["ModelNet10.zip.part"]

    # resuming on a disk that fills again: the count is the file's, not the bytes sent
    monkeypatch.setattr(modelnet, "_open_part", lambda path, mode: _FullDisk(path, mode, 1234))
    with pytest.raises(WriteError, match=f"holds {7777 + 1234} of {len(data)} bytes"):
        modelnet.fetch([server.url("/m.zip"), server.url("/never.zip")], dest / "ModelNet10.zip",
                       progress=False, log=lambda m: None)
    assert part.stat().st_size == 7777 + 1234
    assert server.ranges == [None, "bytes=7777-"]       # a full disk does not try the next mirror

    monkeypatch.undo()
    modelnet.prepare("modelnet10", dest, url=server.url("/m.zip"), progress=False, log=lambda m: None)
    assert server.ranges[-1] == f"bytes={7777 + 1234}-"
    assert_tree(dest / "ModelNet10", files)


def _limited(limit: int):
    def preexec():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as a full disk: Linux")
def test_cli_file_size_limit_is_one_true_line(server, tmp_path):
    """A real short write (the kernel's RLIMIT_FSIZE; Python ignores SIGXFSZ): EFBIG part-way through a chunk."""
    files = tree()
    data = make_zip(files)
    server.files["/m.zip"] = data
    dest = tmp_path / "d"
    cmd = [sys.executable, str(REPO / "tools" / "download_data.py"), "--dataset", "modelnet10", "-y",
           "--dest", str(dest), "--url", server.url("/m.zip")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=tool_env(),
                          preexec_fn=_limited(10_000))
    line = error_line(proc)
    part = dest / "ModelNet10.zip.part"
    assert part.stat().st_size == 10_000
    assert line == (f"error: cannot write {part}: File too large (it holds 10000 of {len(data)} bytes "
                    "and is kept: the next run resumes at byte 10000)")

    # extraction hitting the limit: the archive is fine, so it is kept (not called corrupt and deleted)
    big = make_zip({**files, "ModelNet10/big.bin": bytes(200_000)}, zipfile.ZIP_DEFLATED)
    assert len(big) < 30_000
    server.files["/big.zip"] = big
    dest2 = tmp_path / "d2"
    cmd[cmd.index(str(dest))] = str(dest2)
    cmd[-1] = server.url("/big.zip")
    line = error_line(subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=tool_env(),
                                     preexec_fn=_limited(50_000)))
    assert "cannot write" in line and "big.bin: File too large" in line and "corrupt" not in line
    assert f"while extracting {dest2 / 'ModelNet10.zip'}, which is kept" in line
    assert no_stray_files(dest2) == ["ModelNet10.zip"]
    proc = tool("download_data", "--dataset", "modelnet10", "--dest", dest2, timeout=60)   # reused, no download
    assert proc.returncode == 0, proc.stderr
    assert "using the archive already downloaded" in proc.stdout and len(server.ranges) == 2


def test_help_and_bad_flag_are_fast_and_import_no_tensorflow():
    code = ("import sys, runpy; sys.argv = ['download_data.py', '--help']\n"
            "try:\n    runpy.run_path('tools/download_data.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=tool_env())
    assert proc.returncode == 0, proc.stderr
    assert "--url" in proc.stdout
    proc = tool("download_data", "--bogus", timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr and "Traceback" not in proc.stderr

"""Render a model to a PNG with Blender (the original render_class_view.py stage), from the host side.

The original called Blender 2.7x with a ``.blend`` file; here the scene is built from Blender's factory settings by
``tf3dgan/outputs/blender_scene.py`` (Blender 3.4 and 4.x), which this module runs as::

    blender -b --factory-startup -noaudio --python-exit-code 1 --python blender_scene.py -- <scene arguments>

with a timeout, Blender's output captured (shown only when it fails, or with ``verbose``).  Every PNG is rendered to
a temporary file in the target's folder and renamed onto the target once Blender has exited cleanly and the file is
checked (a PNG of the right size with an alpha channel), so a failed or interrupted render leaves nothing behind.

Inputs: meshes ``.obj`` / ``.ply`` / ``.stl`` (read by Blender's importers); ``.off`` (ModelNet; read by
:func:`tf3dgan.data.voxelize.read_mesh`) and ``.glb`` / ``.gltf`` (read by trimesh), passed on as a temporary ``.obj``; and
voxel grids ``.npy`` / ``.raw`` / ``.binvox`` / ``.npz`` (the first grid, meshed by :func:`tf3dgan.outputs.mesh.grid_to_mesh`
as the closed surface of the voxel faces).  Models are taken as z-up (tf3dgan's meshes and ModelNet's), or y-up with
``up="y"``.
"""
from __future__ import annotations

import collections
import contextlib
import math
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tf3dgan.atomic import atomic_path, check_output_folder
from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.outputs import blender_scene

ENGINES = blender_scene.ENGINES
MESH_FORMATS = {".obj": "obj", ".ply": "ply", ".stl": "stl"}   # read by Blender's importers
CONVERTED_MESHES = (".off", ".glb", ".gltf")                      # converted to .obj here first
VOXEL_SUFFIXES = (".npy", ".raw", ".binvox", ".npz")
SCENE_SCRIPT = Path(__file__).with_name("blender_scene.py")

DEFAULT_AZIMUTH, DEFAULT_ELEVATION, DEFAULT_TILT, DEFAULT_DISTANCE = 50.0, 30.0, 0.0, 2.0   # the original's
DEFAULT_ENGINE = "cycles"
DEFAULT_SAMPLES = 16
DEFAULT_RESOLUTION = 256
DEFAULT_COLOR = "#8fb8de"
DEFAULT_TIMEOUT = 300.0
MAX_RESOLUTION = 16384
TAIL_LINES = 20
INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install blender; Blender 3.4 or newer) or pass its path with -b"


@dataclass(frozen=True)
class View:
    """A camera: ``azimuth`` / ``elevation`` / ``tilt`` in degrees, ``distance`` from the model's centre (the model
    is scaled so its bounding-box diagonal is 1)."""

    azimuth: float = DEFAULT_AZIMUTH
    elevation: float = DEFAULT_ELEVATION
    tilt: float = DEFAULT_TILT
    distance: float = DEFAULT_DISTANCE


@dataclass
class RenderResult:
    outputs: list[Path]
    engine: str
    seconds: float
    command: list[str]
    source: str = ""                   # what was rendered, when the model was converted first
    log: list[str] = field(default_factory=list)
    resolution: int = DEFAULT_RESOLUTION

    def summary(self) -> str:
        """The one line ``tools/render_class_view.py`` ends with."""
        what = str(self.outputs[0]) if len(self.outputs) == 1 else \
            f"{len(self.outputs)} views to {self.outputs[0]} ... {self.outputs[-1].name}"
        source = f" of {self.source}" if self.source else ""
        return (f"wrote {what}{source} ({self.engine}, {self.resolution}x{self.resolution}, "
                f"{self.seconds:.1f} s)")


# ------------------------------------------------------------------------------------------------ inputs
def find_blender(path: str | os.PathLike | None = None) -> str:
    """The Blender executable: ``path`` (a file, or a command name looked up on PATH), default ``blender``."""
    name = os.fspath(path) if path is not None else "blender"
    if not name.strip():
        raise Tf3dganError(f"-b/--blender_path is empty; {INSTALL_HINT}")
    if os.sep in name or (os.altsep and os.altsep in name):
        p = Path(name).expanduser()
        if not p.exists():
            raise Tf3dganError(f"Blender not found: {name} does not exist; {INSTALL_HINT}")
        if p.is_dir() or not os.access(p, os.X_OK):
            raise Tf3dganError(f"Blender not found: {name} is not an executable file; {INSTALL_HINT}")
        return str(p)
    found = shutil.which(name)
    if found is None:
        where = "'blender' is not on PATH" if path is None else f"{name!r} (-b/--blender_path) is not on PATH"
        raise Tf3dganError(f"Blender not found: {where}; {INSTALL_HINT}")
    return found


def parse_color(text: str) -> tuple[float, float, float]:
    """``#rrggbb`` or ``r,g,b`` (sRGB, 0-1) -> floats; a bad colour is a :class:`Tf3dganError`."""
    try:
        return blender_scene.parse_color(text)
    except ValueError as exc:
        raise Tf3dganError(f"--color: {exc}") from None


def check_view(view: View, where: str) -> View:
    values = (view.azimuth, view.elevation, view.tilt, view.distance)
    if not all(math.isfinite(v) for v in values):
        raise Tf3dganError(f"{where}: the view {' '.join(f'{v:g}' for v in values)} is not all finite numbers")
    if view.distance <= 0:
        raise Tf3dganError(f"{where}: distance must be positive, not {view.distance:g}")
    return view


def read_views(path: str | os.PathLike) -> list[View]:
    """A views file: one ``azimuth elevation tilt distance`` per line (spaces or commas); blank lines and ``#``
    comments are skipped."""
    name = os.fspath(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{name}: no such views file")
    if p.is_dir():
        raise DataError(f"{name}: is a folder, not a views file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read views file ({getattr(exc, 'strerror', None) or exc})") from exc
    views = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split()
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = None
        if values is None or len(values) != 4:
            raise DataError(f"{name}:{number}: expected 'azimuth elevation tilt distance' (4 numbers), "
                            f"got {line!r}")
        views.append(check_view(View(*values), f"{name}:{number}"))
    if not views:
        raise DataError(f"{name}: no views in the file (one 'azimuth elevation tilt distance' per line)")
    return views


def output_paths(output: str | os.PathLike, count: int, numbered: bool) -> list[Path]:
    """``output`` itself, or ``<stem>_<i>.png`` beside it for each of ``count`` views when ``numbered``
    (its folder checked by :func:`tf3dgan.atomic.check_output_folder`)."""
    out = Path(output)
    if out.suffix.lower() != ".png":
        raise Tf3dganError(f"{output}: the output image must be a .png file")
    if out.exists() and out.is_dir():
        raise Tf3dganError(f"{output}: is a folder; give a .png file name")
    check_output_folder(out.parent)
    if not numbered:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]


def model_input_check(model: str | os.PathLike) -> None:
    """The cheap checks of :func:`model_input` (the file exists and is of a known kind), done before looking for
    Blender."""
    name = os.fspath(model)
    p = Path(model)
    if not p.exists():
        raise DataError(f"{name}: no such model file")
    if p.is_dir():
        raise DataError(f"{name}: is a folder, not a model file")
    suffix = p.suffix.lower()
    if suffix not in tuple(MESH_FORMATS) + CONVERTED_MESHES + VOXEL_SUFFIXES:
        known = ", ".join(sorted(MESH_FORMATS) + list(CONVERTED_MESHES))
        raise DataError(f"{name}: cannot render '{p.suffix or '(no suffix)'}' files; give a mesh ({known}) or a "
                        f"voxel grid ({', '.join(VOXEL_SUFFIXES)})")


def model_input(model: str | os.PathLike, workdir: str | os.PathLike) -> tuple[Path, str, str]:
    """``(file for Blender, its format, note)``: meshes Blender reads are passed as they are; ``.off`` meshes and
    voxel grids are written to ``workdir`` as ``.obj`` first (``note`` says what was converted)."""
    model_input_check(model)
    name = os.fspath(model)
    p = Path(model)
    suffix = p.suffix.lower()
    if suffix in MESH_FORMATS:
        return p.resolve(), MESH_FORMATS[suffix], ""
    import trimesh

    from tf3dgan.outputs.mesh import export_mesh, grid_to_mesh

    if suffix == ".off":
        from tf3dgan.data.voxelize import read_mesh

        m = read_mesh(p)
        mesh = trimesh.Trimesh(vertices=m.vertices, faces=m.faces, process=False)
        note = f"{name} (converted to .obj)"
    elif suffix in CONVERTED_MESHES:
        # glTF through trimesh, not Blender's importer: Debian's Blender lacks the numpy that importer needs.
        # trimesh keeps the file's coordinates (no y-up turn), as the other formats arrive in Blender.
        try:
            mesh = trimesh.load(str(p), force="mesh", process=False)
        except Exception as exc:  # trimesh raises many kinds of errors
            raise DataError(" ".join(f"{name}: cannot read mesh ({type(exc).__name__}: {exc})".split())) from exc
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise DataError(f"{name}: no triangles in the file")
        note = f"{name} (converted to .obj)"
    else:
        grid, count = _first_grid(p)
        mesh = grid_to_mesh(grid, mesh="faces", name=name)
        note = f"{name}" + (f" grid 0 of {count}" if count > 1 else "") + " (meshed as voxel faces)"
    target = Path(workdir) / f"{p.stem}.obj"
    export_mesh(mesh, target, "obj")
    return target.resolve(), "obj", note


def _first_grid(p: Path):
    if p.suffix.lower() == ".npz":
        from tf3dgan.data.datasets import load_dataset

        ds = load_dataset(str(p), limit=1)
        return ds.grids([0])[0].astype("float32"), len(ds)
    from tf3dgan.outputs.mesh import load_grids

    grids = load_grids(p)
    return grids[0], len(grids)


# ------------------------------------------------------------------------------------------------ Blender
def _num(x: float) -> str:
    """A number argparse inside Blender reads as a value even when negative (no exponent: '-1e-05' looks like an
    option)."""
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def blender_command(blender: str, model: Path, fmt: str, views: list[tuple[View, Path]], *, engine: str,
                    samples: int, resolution: int, color: tuple[float, float, float], up: str = "z") -> list[str]:
    cmd = [blender, "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1",
           "--python", str(SCENE_SCRIPT), "--",
           "--model", str(model), "--format", fmt, "--up", up, "--engine", engine,
           "--samples", str(samples), "--resolution", str(resolution), "--color", ",".join(_num(c) for c in color)]
    for view, png in views:
        cmd += ["--view", _num(view.azimuth), _num(view.elevation), _num(view.tilt), _num(view.distance), str(png)]
    return cmd


def run_blender(cmd: list[str], timeout: float, echo: bool = False) -> tuple[int | None, list[str]]:
    """Run ``cmd`` (stdout and stderr together); returns ``(exit status or None on timeout, last lines)``.
    ``echo`` prints Blender's lines as they come."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    errors: list[str] = []
    try:
        # its own process group, so that a timeout also ends anything Blender (or a wrapper script) started
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=(os.name == "posix"))
    except OSError as exc:
        raise Tf3dganError(f"cannot run Blender {cmd[0]}: {exc.strerror or exc}") from None
    timed_out = threading.Event()

    def end() -> None:
        with contextlib.suppress(OSError):
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()

    def kill() -> None:
        timed_out.set()
        end()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tail.append(line)
            if line.startswith(blender_scene.ERROR_PREFIX):
                errors.append(line[len(blender_scene.ERROR_PREFIX):].strip())
            if echo:
                print(line, flush=True)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:   # interrupted: do not leave Blender running
            end()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    lines = list(tail)
    if errors:
        lines.append(blender_scene.ERROR_PREFIX + errors[-1])
    return (None if timed_out.is_set() else code), lines


def _show_tail(lines: list[str]) -> None:
    shown = [line for line in lines if not line.startswith(blender_scene.ERROR_PREFIX)][-TAIL_LINES:]
    if shown:
        print(f"Blender's last {len(shown)} lines:", file=sys.stderr)
        for line in shown:
            print(f"  | {line}", file=sys.stderr)
        sys.stderr.flush()


def _failure(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if line.startswith(blender_scene.ERROR_PREFIX):
            return line[len(blender_scene.ERROR_PREFIX):].strip() or None
    return None


def check_png(path: Path, target: Path, resolution: int) -> None:
    """Blender's file must be an RGBA PNG of ``resolution``² pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError as exc:
        raise Tf3dganError(f"Blender wrote no image for {target} ({exc.strerror or exc})") from None
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise Tf3dganError(f"Blender exited normally but wrote no PNG for {target}")
    width, height, depth, color_type = struct.unpack(">IIBB", head[16:26])
    if (width, height) != (resolution, resolution) or color_type != 6:
        raise Tf3dganError(f"Blender wrote a {width}x{height} PNG (colour type {color_type}) for {target}, "
                           f"expected {resolution}x{resolution} RGBA")


def render(model: str | os.PathLike, output: str | os.PathLike, views: list[View] | None = None, *,
           numbered: bool | None = None, engine: str = DEFAULT_ENGINE, samples: int = DEFAULT_SAMPLES,
           resolution: int = DEFAULT_RESOLUTION, color: str = DEFAULT_COLOR, blender: str | None = None,
           timeout: float = DEFAULT_TIMEOUT, verbose: bool = False, up: str = "z") -> RenderResult:
    """Render ``model`` from each of ``views`` (default: the original's single view) in one Blender run.

    One view goes to ``output``; with ``numbered`` (default: when there are several views) view ``i`` goes to
    ``<output stem>_<i>.png``.  Raises :class:`Tf3dganError` with one line for anything that goes wrong, after
    printing Blender's last lines to stderr when Blender itself failed.
    """
    views = [View()] if views is None else list(views)
    if not views:
        raise Tf3dganError("no views to render")
    for i, v in enumerate(views):
        check_view(v, f"view {i}")
    if engine not in ENGINES:
        raise Tf3dganError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if up not in ("z", "y"):
        raise Tf3dganError(f"--up must be z or y, not {up!r}")
    if samples < 1:
        raise Tf3dganError(f"--samples must be at least 1, not {samples}")
    if not 1 <= resolution <= MAX_RESOLUTION:
        raise Tf3dganError(f"--resolution must be between 1 and {MAX_RESOLUTION}, not {resolution}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise Tf3dganError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    rgb = parse_color(color)
    numbered = len(views) > 1 if numbered is None else numbered
    if len(views) > 1 and not numbered:
        raise Tf3dganError("several views need numbered outputs")
    outputs = output_paths(output, len(views), numbered)
    model_input_check(model)
    exe = find_blender(blender)

    with tempfile.TemporaryDirectory(prefix="tf3dgan-render-") as work, contextlib.ExitStack() as stack:
        src, fmt, note = model_input(model, work)
        temps = [stack.enter_context(atomic_path(out)) for out in outputs]   # a failure: one WriteError line
        cmd = blender_command(exe, src, fmt, list(zip(views, temps)), engine=engine, samples=samples,
                              resolution=resolution, color=rgb, up=up)
        if verbose:
            print("running: " + shlex.join(cmd), flush=True)
        start = time.perf_counter()
        code, lines = run_blender(cmd, timeout, echo=verbose)
        seconds = time.perf_counter() - start
        if code is None:
            if not verbose:
                _show_tail(lines)
            raise Tf3dganError(f"Blender did not finish within {timeout:g} s (raise --timeout); nothing was written")
        if code != 0:
            if not verbose:
                _show_tail(lines)
            why = _failure(lines)
            status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise Tf3dganError(f"Blender failed ({status}): {why}" if why else
                               f"Blender failed ({status}) while rendering {model}; its last lines are above")
        for tmp, out in zip(temps, outputs):
            check_png(tmp, out, resolution)
    return RenderResult(outputs, engine, seconds, cmd, note, lines, resolution)


def camera_views(views_file: str | os.PathLike | None = None, azimuth: float | None = None,
                 elevation: float | None = None, tilt: float | None = None,
                 distance: float | None = None) -> list[View]:
    """The views of ``views_file`` (:func:`read_views`), or one view with the given angles and distance (the
    defaults for those not given); a views file and single angles do not go together."""
    single = (azimuth, elevation, tilt, distance)
    if views_file is not None:
        if any(v is not None for v in single):
            raise Tf3dganError("give either --views FILE or -a/-e/-t/-d, not both")
        return read_views(views_file)
    defaults = (DEFAULT_AZIMUTH, DEFAULT_ELEVATION, DEFAULT_TILT, DEFAULT_DISTANCE)
    return [View(*(d if v is None else v for v, d in zip(single, defaults)))]


def render_model(model: str | os.PathLike, output: str | os.PathLike, *, views_file: str | os.PathLike | None = None,
                 azimuth: float | None = None, elevation: float | None = None, tilt: float | None = None,
                 distance: float | None = None, **settings) -> RenderResult:
    """What ``tools/render_class_view.py`` does: :func:`render` ``model`` from the :func:`camera_views` of
    ``views_file`` (one PNG each, ``<output stem>_<i>.png``) or of the single angles into ``output``;
    ``settings``: :func:`render`'s engine, samples, resolution, color, blender, timeout, verbose and up."""
    views = camera_views(views_file, azimuth, elevation, tilt, distance)
    return render(model, output, views, numbered=views_file is not None, **settings)


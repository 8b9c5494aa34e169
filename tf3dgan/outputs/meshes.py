"""Voxel grids to mesh files: a run's samples, or the grids of one source (what ``tools/convert_to_obj.py`` does).

NumPy only at import (through :mod:`tf3dgan.outputs.mesh`); SciPy/scikit-image/trimesh load only to mesh.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.outputs.mesh import (
    DEFAULT_SCALE,
    FORMATS,
    EmptyGridError,
    check_output,
    empty_note,
    export_mesh,
    grid_to_mesh,
    open_grids,
)


@dataclass
class Converted:
    """What :func:`convert_to_meshes` wrote: ``written`` (path, vertices, triangles, seconds) per mesh file."""

    folder: Path
    format: str
    threshold: float
    written: list[tuple[Path, int, int, float]] = field(default_factory=list)
    existing: int = 0                      # a run's samples whose mesh was already there
    empty: list = field(default_factory=list)   # sample files (a run) or grid indices (a source) with no voxel
    total: int = 0                         # grids asked for (a source)
    run: bool = False                      # converted a run's samples (else one source)
    every: bool = False                    # every grid of the source (--all)

    @property
    def paths(self) -> list[Path]:
        return [w[0] for w in self.written]

    def summary(self) -> str:
        """The tool's closing line (and, for a source with empty grids, a second line saying which)."""
        n, fmt = len(self.written), self.format
        if self.run:
            extra = "".join([f", skipped {self.existing} existing" if self.existing else "",
                             f", skipped {len(self.empty)} with no voxel above --threshold {self.threshold:g}"
                             if self.empty else ""])
            return f"wrote {n} .{fmt} file{'s' * (n != 1)} to {self.folder}{extra}"
        if n == 1 and not self.every:
            t, vertices, triangles, seconds = self.written[0]
            line = f"wrote {t} ({vertices} vertices, {triangles} triangles; meshed in {1000 * seconds:.0f} ms)"
        else:
            line = (f"wrote {n} .{fmt} file{'s' * (n != 1)} to {self.folder} "
                    f"({self.written[0][0].name} ... {self.written[-1][0].name})")
        if self.empty:
            line += "\n" + empty_note(self.empty, self.total, self.threshold) + "; not written"
        return line


def mesh_format(output: str | os.PathLike | None = None, fmt: str | None = None) -> str:
    """``fmt``, else the suffix of ``output`` when it is a mesh format, else obj."""
    if fmt is not None:
        return fmt
    suffix = Path(output).suffix.lstrip(".").lower() if output else ""
    return suffix if suffix in FORMATS else "obj"


def convert_to_meshes(name: str | None = None, file: str | os.PathLike | None = None, *,
                      out: str | os.PathLike = "savepoint", output: str | os.PathLike | None = None,
                      index: int | None = None, every: bool = False, threshold: float | None = None,
                      mesh: str = "cubes", smooth: float = 0.0, fmt: str | None = None,
                      scale: float = DEFAULT_SCALE, report: Callable[[str], None] | None = None) -> Converted:
    """Mesh run ``name``'s samples (every ``<out>/<name>/*.npy`` into ``<out>/<name>/models/``, keeping meshes
    that exist and skipping empty samples), or grid ``index`` (default 0; ``every``: all of them, as
    ``<stem>_<i>``) of ``file`` (any source :func:`tf3dgan.outputs.mesh.open_grids` reads) into ``output``
    (default: beside the source). ``threshold`` defaults to the run's; ``fmt`` to ``output``'s suffix, else obj.
    ``report`` hears one line per skipped empty sample of a run."""
    from tf3dgan.training.runs import sample_files, threshold_for

    if scale <= 0:
        raise Tf3dganError(f"--scale must be positive, not {scale:g}")
    if smooth < 0:
        raise Tf3dganError(f"--smooth must be >= 0, not {smooth:g}")
    if (name is None) == (file is None):
        raise Tf3dganError("give one of -n/--name (a run) or -f/--file (a source of grids)")
    fmt = mesh_format(output, fmt)
    options = dict(mesh=mesh, scale=scale, smooth=smooth)
    if name is not None:
        if output or index is not None or every:
            raise Tf3dganError("-o/--output, --index and --all go with -f/--file, not -n/--name")
        folder, files = sample_files(out, name, "convert")
        threshold, _ = threshold_for(run_dir=folder, given=threshold)
        models = check_output(folder / "models" / f"x.{fmt}").parent
        result = Converted(models, fmt, threshold, run=True, total=len(files))
        for f in files:
            target = models / f"{f.stem}.{fmt}"
            if target.exists():
                result.existing += 1
                continue
            start = time.perf_counter()
            try:
                m = grid_to_mesh(open_grids(f).grids([0])[0], threshold=threshold, name=str(f), **options)
            except EmptyGridError as exc:
                if report is not None:
                    report(f"skipped {f}: {exc}")
                result.empty.append(f)
                continue
            seconds = time.perf_counter() - start
            export_mesh(m, target, fmt)
            result.written.append((target, len(m.vertices), len(m.faces), seconds))
        return result

    threshold, _ = threshold_for(file, given=threshold)
    i = 0 if index is None else index
    source = open_grids(file, limit=None if every or i < 0 else i + 1)
    indices = list(range(len(source))) if every else [source.index(i)]
    if output:
        path = Path(output)
        base = path.with_suffix("") if path.suffix.lstrip(".").lower() in FORMATS else path
    else:
        base = source.folder / source.stem
    check_output(base.parent / f"{base.name}.{fmt}")
    result = Converted(base.parent, fmt, threshold, total=len(indices), every=every)
    for i in indices:
        target = base.parent / f"{base.name}_{i}.{fmt}" if every else base.parent / f"{base.name}.{fmt}"
        start = time.perf_counter()
        try:   # one grid unpacked at a time
            m = grid_to_mesh(source.grids([i])[0], threshold=threshold, name=source.label(i), **options)
        except EmptyGridError:
            if not every:
                raise
            result.empty.append(i)
            continue
        seconds = time.perf_counter() - start
        export_mesh(m, target, fmt)
        result.written.append((target, len(m.vertices), len(m.faces), seconds))
    if not result.written:
        raise DataError(f"{source.spec}: none of its {len(source)} grids has a voxel above --threshold "
                        f"{threshold:g}; give a lower --threshold")
    return result

"""Pictures of voxel grids: a run's samples, or one source's grid or sheet (what ``tools/convert_to_graph.py`` does).

Light at import; :mod:`tf3dgan.outputs.plots` (matplotlib, SciPy: a second or more) loads only once there is
something to draw.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tf3dgan.choices import COLORMAPS, DEFAULT_VIEW
from tf3dgan.errors import Tf3dganError

PICTURE_TYPES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def parse_grid(text: str | None) -> tuple[int, int] | None:
    """``"RxC"`` (also ``R×C``) as (rows, cols); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise Tf3dganError(f"--grid wants ROWSxCOLS with positive numbers (e.g. 4x4), not {text!r}")
    return int(m[1]), int(m[2])


@dataclass
class Drawn:
    """What :func:`draw_graphs` drew: ``pictures`` written; for a run, pictures kept and empty samples skipped."""

    folder: Path
    threshold: float
    seconds: float = 0.0
    pictures: list[Path] = field(default_factory=list)
    existing: int = 0
    empty: list[Path] = field(default_factory=list)
    note: str | None = None     # a source's sheet with empty panels: which
    run: bool = False

    def summary(self) -> str:
        """The tool's closing line (and, after a sheet with empty panels, a second line saying which)."""
        if self.run:
            n = len(self.pictures)
            extra = "".join([f", kept {self.existing} existing (--force redraws them)" if self.existing else "",
                             f", skipped {len(self.empty)} with no voxel above --threshold {self.threshold:g}"
                             if self.empty else ""])
            return f"drew {n} graph{'s' * (n != 1)} into {self.folder}{extra} in {self.seconds:.1f}s"
        return f"wrote {self.pictures[0]} in {self.seconds:.1f}s" + (f"\n{self.note}" if self.note else "")


def draw(source, target: Path, sheet: tuple[int, int] | None = None, index: int | None = None, *,
         threshold: float, colormap: str = COLORMAPS[1], up_axis: int = 1, view=DEFAULT_VIEW, style: str = "scatter",
         tile: float = 3.0) -> str | None:
    """Draw ``source`` (a :class:`tf3dgan.outputs.mesh.GridSource`) to ``target``: its grid ``index`` (default 0),
    or a ``sheet`` of (rows, cols) first grids; returns a note on empty panels of a sheet."""
    from tf3dgan.outputs.mesh import check_occupied, empty_grids, empty_note

    style = dict(threshold=threshold, colormap=colormap, up_axis=up_axis, view=tuple(view), style=style)
    if sheet is not None:
        rows, cols = sheet
        indices = list(range(min(rows * cols, len(source))))
        grids = source.grids(indices)
        titles = [source.title(i) for i in indices]
        empty = empty_grids(grids, threshold)
        if len(empty) == len(indices) == 1:
            check_occupied(grids[0], threshold, source.label(0))
        from tf3dgan.outputs import plots  # matplotlib and SciPy: only once there is something to draw

        plots.save_voxel_sheet(target, grids, titles, rows, cols, title=Path(source.spec).name or source.spec,
                               tile=tile, **style)
        return empty_note(empty, len(indices), threshold, "panels") if empty else None
    i = source.index(0 if index is None else index)
    grid = source.grids([i])[0]
    check_occupied(grid, threshold, source.label(i))
    from tf3dgan.outputs import plots

    title = f"{source.stem}[{i}]" if source.names is None and len(source) > 1 else source.title(i)
    plots.save_voxel_graph(target, grid, title, **style)
    return None


def draw_graphs(name: str | None = None, file: str | os.PathLike | None = None, *,
                out: str | os.PathLike = "savepoint", output: str | os.PathLike | None = None,
                grid: str | tuple[int, int] | None = None, tile: float = 3.0, index: int | None = None,
                threshold: float | None = None, colormap: int | str = 1, style: str = "scatter",
                view=DEFAULT_VIEW, up_axis: int = 1, force: bool = False,
                report: Callable[[str], None] | None = None) -> Drawn:
    """Draw run ``name``'s samples (every ``<out>/<name>/*.npy`` into ``<out>/<name>/3D_graphs/``, keeping pictures
    that exist unless ``force``), or ``file`` (any source :func:`tf3dgan.outputs.mesh.open_grids` reads) into
    ``output`` [default: ``<its folder>/3D_graphs/<stem>.png``]: grid ``index``, or a ``grid`` sheet ("RxC").
    ``threshold`` defaults to the run's; ``colormap``: an index into :data:`tf3dgan.choices.COLORMAPS` or a name.
    ``report`` hears one line per sample of a run that was skipped (empty) or drawn with empty panels."""
    from tf3dgan.outputs.mesh import EmptyGridError, check_output, open_grids
    from tf3dgan.training.runs import sample_files, threshold_for

    sheet = parse_grid(grid) if isinstance(grid, str) or grid is None else tuple(grid)
    if not 0.5 <= tile <= 20:
        raise Tf3dganError(f"--tile must be between 0.5 and 20 inches, not {tile:g}")
    if sheet is not None and index is not None:
        raise Tf3dganError("--grid and --index do not go together (a sheet starts at the first grid)")
    if output and Path(output).suffix.lower() not in PICTURE_TYPES:
        raise Tf3dganError(f"{output}: unknown picture type {Path(output).suffix or '(none)'!r} "
                           "(use .png, .jpg, .pdf or .svg)")
    if (name is None) == (file is None):
        raise Tf3dganError("give one of -n/--name (a run) or -f/--file (a source of grids)")
    look = dict(colormap=COLORMAPS[colormap] if isinstance(colormap, int) else colormap, up_axis=up_axis,
                view=tuple(view), style=style, tile=tile)
    say = report or (lambda line: None)
    start = time.perf_counter()
    if name is not None:
        if output:
            raise Tf3dganError("-o/--output goes with -f/--file, not -n/--name")
        folder, files = sample_files(out, name, "draw")
        threshold, _ = threshold_for(run_dir=folder, given=threshold)
        graphs = check_output(folder / "3D_graphs" / "x.png").parent
        result = Drawn(graphs, threshold, run=True)
        for f in files:
            target = graphs / f"{f.stem}.png"
            if target.exists() and not force:
                result.existing += 1
                continue
            try:
                note = draw(open_grids(f), target, sheet, index, threshold=threshold, **look)
            except EmptyGridError as exc:
                say(f"skipped {f}: {exc}")
                result.empty.append(f)
                continue
            if note:
                say(f"{target}: {note}")
            result.pictures.append(target)
    else:
        threshold, _ = threshold_for(file, given=threshold)
        if sheet is not None:
            limit = sheet[0] * sheet[1]       # a folder of loose files is read only so far
        else:
            i = 0 if index is None else index
            limit = i + 1 if i >= 0 else None
        source = open_grids(file, limit=limit)
        target = Path(output) if output else source.folder / "3D_graphs" / f"{source.stem}.png"
        check_output(target)
        result = Drawn(target.parent, threshold, pictures=[target])
        result.note = draw(source, target, sheet, index, threshold=threshold, **look)
    result.seconds = time.perf_counter() - start
    return result

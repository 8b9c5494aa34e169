"""Shapes from a trained generator: a batch (or an interpolation) of grids, its latents, and on request a sheet
and one mesh per shape (what ``tools/generate.py`` writes).

Only light modules load at import; the arguments, the run and the output folder are checked before Keras and
TensorFlow load (inside :func:`generate_shapes`), matplotlib only for a sheet.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tf3dgan.choices import COLORMAPS
from tf3dgan.errors import Tf3dganError


@dataclass
class Generated:
    """What :func:`generate_shapes` wrote."""

    grids: Path                    # <stem>.npy, the batch (N, D, H, W)
    latents: Path                  # <stem>_latents.npy
    count: int
    shape: tuple
    resolution: int
    source: Path                   # the checkpoint or weights file the generator came from
    threshold: float
    seconds: float
    sheet: Path | None = None
    binary: Path | None = None     # <stem>_binary.npy: the grids thresholded, uint8 0/1
    meshes: list[Path] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)   # shapes with no voxel above the threshold (no mesh)
    stem: str = ""
    with_meshes: bool = False

    def summary(self) -> str:
        """The one line the tool ends with."""
        wrote = [f"{self.grids} {self.shape}"] + ([f"{self.binary} (0/1 at {self.threshold:g})"] if self.binary else [])
        if self.sheet is not None:
            wrote.append(str(self.sheet))
        if self.with_meshes:
            empty = len(self.empty)
            wrote.append(f"{len(self.meshes)} .obj meshes ({self.stem}_<i>.obj)"
                         + (f"; {empty} shape(s) with no voxel above {self.threshold:g} have none" if empty else ""))
        return (f"generated {self.count} shapes of {self.resolution}³ with {self.source} in {self.seconds:.1f}s; "
                "wrote " + ", ".join(wrote))


def generate_shapes(name: str | None = None, *, weights: str | None = None, load_epoch: int | None = None,
                    out: str | os.PathLike = "savepoint", dest: str | os.PathLike | None = None, count: int = 16,
                    seed: int = 0, interpolate: int | None = None, seed2: int | None = None,
                    interpolation: str = "linear", sheet: bool = False, style: str = "shaded",
                    colormap: int | str = 1, obj: bool = False, mesh: str = "faces",
                    threshold: float | None = None, batch: int = 16, binary: bool = False,
                    ema: bool = True) -> Generated:
    """Generate ``count`` shapes (or ``interpolate`` shapes on the path from ``seed``'s latent to ``seed2``'s) with
    run ``name``'s generator (under ``out``; checkpoint of ``load_epoch``, else the newest) or the ``weights`` file.

    Writes ``<dest>/<stem>.npy`` (the batch) and ``<stem>_latents.npy`` (``dest`` defaults to
    ``<out>/<name>/generated``, or ``./generated``), with ``sheet`` a PNG sheet ``<stem>.png`` and with ``obj`` one
    mesh ``<stem>_<i>.obj`` per shape that has a voxel above ``threshold`` (default: the run's), with ``binary``
    ``<stem>_binary.npy`` (the grids above ``threshold``, uint8 0/1). ``ema=False``: a ``--g-ema`` run's raw G
    instead of its moving average. ``colormap``: an
    index into :data:`tf3dgan.choices.COLORMAPS` or a name. Errors in the arguments, a missing run or weights file
    and an unwritable ``dest`` are raised before TensorFlow is imported.
    """
    from tf3dgan.atomic import check_output_folder
    from tf3dgan.cli import import_tensorflow_quietly
    from tf3dgan.training import runs

    if name is None and weights is None:
        raise Tf3dganError("say which generator: -n RUN (optionally -le EPOCH), --weights FILE or --pretrained NAME")
    if load_epoch is not None and weights is not None:
        raise Tf3dganError("-le picks a checkpoint of the run; --weights names a file: give one of them")
    for flag, value, low in (("--count", count, 1), ("--batch", batch, 1), ("--interpolate", interpolate, 2)):
        if value is not None and value < low:
            raise Tf3dganError(f"{flag} must be at least {low}, not {value}")
    run_dir = runs.run_path(out, name) if name else None
    if run_dir is not None and not run_dir.is_dir():
        raise Tf3dganError(f"{run_dir}: no such run folder (check -n and --out)")
    runs.generator_source(run_dir, weights, load_epoch)   # a missing file answers before TF starts
    dest = Path(dest) if dest else (run_dir / "generated" if run_dir else Path("generated"))
    check_output_folder(dest)                               # so does an unwritable dest
    cmap = COLORMAPS[colormap] if isinstance(colormap, int) else colormap
    start = time.perf_counter()
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import_tensorflow_quietly()   # after the checks above, so a wrong argument answers at once
    import numpy as np

    from tf3dgan.atomic import atomic_path
    from tf3dgan.outputs import sampling
    from tf3dgan.spec import describe

    generator, source = runs.load_generator(run_dir, weights, load_epoch, ema=ema)
    spec = generator.spec
    if threshold is None:   # the run's (config.json), else the one its model implies
        threshold = (runs.run_threshold(run_dir) if run_dir else None) or runs.model_threshold(spec.to_dict())

    if interpolate:
        seed2 = seed + 1 if seed2 is None else seed2
        ends = [sampling.latents(1, spec.latent_dim, s)[0] for s in (seed, seed2)]
        z = sampling.interpolate(*ends, interpolate, interpolation)
        stem = f"interp_seed{seed}-{seed2}_k{interpolate}"
        titles = [f"t={t:.2f}" for t in np.linspace(0, 1, interpolate)]
        rows, cols = 1, interpolate
    else:
        z = sampling.latents(count, spec.latent_dim, seed)
        stem = f"seed{seed}_n{count}"
        titles = [str(i) for i in range(count)]
        rows, cols = None, None
    grids = sampling.generate(generator, z, batch)
    target = dest / f"{stem}.npy"
    with atomic_path(target) as tmp:
        np.save(tmp, grids)
    with atomic_path(dest / f"{stem}_latents.npy") as tmp:
        np.save(tmp, z)
    result = Generated(grids=target, latents=dest / f"{stem}_latents.npy", count=len(grids),
                       shape=tuple(grids.shape), resolution=spec.resolution, source=source, threshold=threshold,
                       seconds=0.0, stem=stem, with_meshes=obj)
    if binary:
        result.binary = dest / f"{stem}_binary.npy"
        with atomic_path(result.binary) as tmp:
            np.save(tmp, (grids > threshold).astype(np.uint8))
    if sheet:
        from tf3dgan.outputs import plots

        result.sheet = plots.save_voxel_sheet(dest / f"{stem}.png", grids, titles, rows, cols, style=style,
                                              threshold=threshold, colormap=cmap,
                                              title=f"{describe(spec)} from {source.name}")
    if obj:
        from tf3dgan.outputs import mesh as meshes

        for i, g in enumerate(grids):
            if not (g > threshold).any():
                result.empty.append(i)
                continue
            result.meshes.append(meshes.export_mesh(meshes.grid_to_mesh(g, threshold=threshold, mesh=mesh),
                                                    dest / f"{stem}_{i}.obj"))
    result.seconds = time.perf_counter() - start
    return result

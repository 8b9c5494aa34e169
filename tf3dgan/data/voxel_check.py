"""The built-in voxelizer against binvox reference files (what ``tools/check_voxelizer.py`` prints).

For every mesh ``MESH_DIR/<rel>/X.off`` (or .obj/.stl/.ply) the references looked for are
``REF_DIR/<rel>/X<tag>.raw|.binvox``, where the tag says how binvox was run:

  X.win126.raw            Windows binvox.exe -d 64 (= ``binvox-win`` at 64)
  X.raw / X.binvox        binvox -d D (= ``binvox`` at D, D read from the file)
  X.d32_e_cb.binvox       binvox -d 32 -e -cb (tags .dD, _e = surface, _cb = --center)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from tf3dgan.data import binvox
from tf3dgan.data.voxelize import find_meshes, iou, read_mesh, voxelize_mesh
from tf3dgan.errors import DataError, Tf3dganError

__all__ = ["Check", "CheckResult", "references", "check_voxelizer", "format_table"]

_TAG = re.compile(r"^\.d(?P<dim>\d+)(?P<e>_e)?(?P<cb>_cb)?$")


class Check(NamedTuple):
    """One reference file of a mesh and the voxelizer settings it stands for."""
    method: str
    center: bool
    tag: str        # how the reference was named, e.g. '.win126.raw'
    reference: Path


class CheckResult(NamedTuple):
    rows: dict      # "method --dim D  vs  X<tag>" -> [(IoU, mesh relative path), ...]
    failures: list  # one line per mesh that could not be read
    warnings: tuple = ()  # one line per entry named like a mesh that is not a mesh file (a folder)

    def describe(self) -> str:
        """What ``tools/check_voxelizer.py`` prints: the warnings, the unreadable meshes, the IoU table."""
        lines = [*self.warnings, *(f"failed: {line}" for line in self.failures), format_table(self.rows)]
        if self.failures:
            lines.append(f"{len(self.failures)} mesh file(s) could not be read")
        return "\n".join(lines)


def references(ref_dir: Path, rel: Path) -> list[Check]:
    """The reference files of mesh ``rel`` (its path relative to the mesh folder, suffix dropped)."""
    folder, stem = Path(ref_dir) / rel.parent, rel.name
    if not folder.is_dir():
        return []
    escaped = re.sub(r"([*?\[])", r"[\1]", stem)
    checks = []
    for path in sorted(folder.glob(f"{escaped}*")):
        tail = path.name[len(stem):]
        if tail == ".win126.raw":
            checks.append(Check("binvox-win", False, tail, path))
        elif tail == ".raw" or (tail == ".binvox" and not (folder / f"{stem}.raw").exists()):
            checks.append(Check("binvox", False, tail, path))
        elif path.suffix in (".raw", ".binvox"):
            match = _TAG.match(tail[: -len(path.suffix)])
            if match:
                checks.append(Check("surface" if match["e"] else "binvox", bool(match["cb"]), tail, path))
    return checks


def _label(check: Check, dim: int) -> str:
    return f"{check.method}{' --center' if check.center else ''} --dim {dim}  vs  X{check.tag}"


def check_voxelizer(ref_dir, mesh_dir, methods=None,
                    on_file: Callable[[float, str, Path], None] | None = None) -> CheckResult:
    """Voxelize every mesh under ``mesh_dir`` that has references under ``ref_dir`` as each
    reference says (``methods``: only these) and take the IoU with it.  ``on_file(iou, label,
    rel)`` is called per comparison; an entry named like a mesh that is not a file (a folder
    ``x.off``) is one line in ``warnings``.  A missing folder, or no mesh with a reference, is a
    ``Tf3dganError``, and so is having only unreadable ones; an unreadable mesh is one line in
    ``failures``."""
    ref_dir, mesh_dir = Path(ref_dir), Path(mesh_dir)
    for folder in (ref_dir, mesh_dir):
        if not folder.is_dir():
            raise Tf3dganError(f"folder '{folder}' does not exist")
    rows: dict[str, list[tuple[float, str]]] = {}
    failures = []
    warnings: list[str] = []
    for mesh_path in find_meshes(mesh_dir, report=warnings.append):
        rel = mesh_path.relative_to(mesh_dir).with_suffix("")
        checks = [c for c in references(ref_dir, rel) if not methods or c.method in methods]
        if not checks:
            continue
        try:
            mesh = read_mesh(mesh_path)
            for check in checks:
                ref = (binvox.read_raw if check.reference.suffix == ".raw" else binvox.read_binvox)(check.reference)
                value = iou(voxelize_mesh(mesh, ref.shape[0], check.method, check.center), ref)
                key = _label(check, ref.shape[0])
                rows.setdefault(key, []).append((value, str(rel)))
                if on_file is not None:
                    on_file(value, key, rel)
        except DataError as exc:
            failures.append(str(exc))
    if not rows and failures:
        raise Tf3dganError(f"none of the {len(failures)} mesh file(s) with references under '{mesh_dir}' could be "
                           f"read; the first: {failures[0]}")
    if not rows:
        odd = f"; {len(warnings)} entry(ies) named like a mesh are not files: {warnings[0]}" if warnings else ""
        raise Tf3dganError(f"no mesh under '{mesh_dir}' has a reference file under '{ref_dir}' "
                           "(X.win126.raw, X.raw, X.binvox or X.dD[_e][_cb].binvox beside the same relative path)"
                           + odd)
    return CheckResult(rows, failures, tuple(warnings))


def format_table(rows: dict) -> str:
    """Mean / min IoU, exact matches and the worst file per method."""
    lines = [f"{'method':52s} {'files':>5s} {'mean IoU':>9s} {'min IoU':>8s} {'exact':>5s}  worst file"]
    for key, values in rows.items():
        ious = np.array([v for v, _ in values])
        worst = min(values)
        lines.append(f"{key:52s} {len(values):5d} {ious.mean():9.4f} {worst[0]:8.4f} {int((ious == 1).sum()):5d}  "
                     f"{worst[1]}")
    return "\n".join(lines)

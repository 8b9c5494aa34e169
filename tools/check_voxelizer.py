#!/usr/bin/env python3
"""Compare the built-in voxelizer with binvox reference files: mean / min IoU per method.

For every mesh MESH_DIR/<rel>/X.off (or .obj/.stl/.ply) the references looked for are
REF_DIR/<rel>/X<tag>.raw|.binvox, where the tag says how binvox was run:

  X.win126.raw            Windows binvox.exe -d 64 (= binvox-win at 64)
  X.raw / X.binvox        binvox -d D (= binvox at D, D read from the file)
  X.d32_e_cb.binvox       binvox -d 32 -e -cb (tags .dD, _e = surface, _cb = --center)

Example: python tools/check_voxelizer.py shared/data/binvox_reference shared/data/modelnet_sample -v
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tf3dgan import binvox
from tf3dgan.cli import run_tool
from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.voxelize import find_meshes, iou, read_mesh, voxelize_mesh

_TAG = re.compile(r"^\.d(?P<dim>\d+)(?P<e>_e)?(?P<cb>_cb)?$")


class Check(NamedTuple):
    method: str
    center: bool
    tag: str        # how the reference was named, e.g. '.win126.raw'
    reference: Path


def references(ref_dir: Path, rel: Path) -> list[Check]:
    """The reference files of mesh ``rel`` (relative path of the mesh, suffix dropped)."""
    folder, stem = ref_dir / rel.parent, rel.name
    if not folder.is_dir():
        return []
    checks = []
    for path in sorted(folder.glob(f"{glob_escape(stem)}*")):
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


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_grid(path: Path) -> np.ndarray:
    return binvox.read_raw(path) if path.suffix == ".raw" else binvox.read_binvox(path)


def label(check: Check, dim: int) -> str:
    return f"{check.method}{' --center' if check.center else ''} --dim {dim}"


def compare(args: argparse.Namespace) -> None:
    ref_dir, mesh_dir = Path(args.ref_dir), Path(args.mesh_dir)
    for folder in (ref_dir, mesh_dir):
        if not folder.is_dir():
            raise Tf3dganError(f"folder '{folder}' does not exist")
    rows: dict[str, list[tuple[float, str]]] = {}
    failures = []
    meshes = find_meshes(mesh_dir)
    for mesh_path in meshes:
        rel = mesh_path.relative_to(mesh_dir).with_suffix("")
        checks = [c for c in references(ref_dir, rel) if not args.methods or c.method in args.methods]
        if not checks:
            continue
        try:
            mesh = read_mesh(mesh_path)
            for check in checks:
                ref = read_grid(check.reference)
                grid = voxelize_mesh(mesh, ref.shape[0], check.method, check.center)
                value = iou(grid, ref)
                key = f"{label(check, ref.shape[0])}  vs  X{check.tag}"
                rows.setdefault(key, []).append((value, str(rel)))
                if args.verbose:
                    print(f"{value:.4f}  {key:48s} {rel}")
        except DataError as exc:
            failures.append(str(exc))
            print(f"failed: {exc}")
    if not rows:
        raise Tf3dganError(f"no mesh under '{mesh_dir}' has a reference file under '{ref_dir}' "
                           "(X.win126.raw, X.raw, X.binvox or X.dD[_e][_cb].binvox beside the same relative path)")
    print(f"{'method':52s} {'files':>5s} {'mean IoU':>9s} {'min IoU':>8s} {'exact':>5s}  worst file")
    for key, values in rows.items():
        ious = np.array([v for v, _ in values])
        worst = min(values)
        print(f"{key:52s} {len(values):5d} {ious.mean():9.4f} {worst[0]:8.4f} {int((ious == 1).sum()):5d}  {worst[1]}")
    if failures:
        print(f"{len(failures)} mesh file(s) could not be read")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="IoU of the built-in voxelizer against binvox reference files.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("ref_dir", help="folder of reference voxel files (same relative paths as the meshes)")
    p.add_argument("mesh_dir", help="folder searched recursively for meshes")
    p.add_argument("--methods", nargs="+", choices=["binvox-win", "binvox", "surface"], default=None,
                   help="only these methods [default: all with references]")
    p.add_argument("-v", "--verbose", action="store_true", help="print the IoU of every file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: compare(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())

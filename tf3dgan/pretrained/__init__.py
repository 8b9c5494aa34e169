"""Generators trained by tf3dgan and shipped inside the package: sample them with no run folder and no download.

Each model is two files here: ``<name>.npz``, a generator-only checkpoint (G's weights, stored as float16, with
the checkpoint metadata that describes the model, so :func:`tf3dgan.training.runs.load_generator` reads it as
it reads any checkpoint), and ``<name>.json``, its provenance: the command that trained it, how long that took,
and its metrics against the test split with the real-vs-real floors.

    python tools/generate.py --pretrained chair32 --count 16 --seed 0 --sheet --obj

:func:`pack` writes such a pair from a run's checkpoint (the moving average of G for a ``--g-ema`` run).
NumPy only at import.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tf3dgan.choices import PRETRAINED
from tf3dgan.errors import Tf3dganError

FOLDER = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The shipped weights of model ``name`` (a ``tf3dgan.choices.PRETRAINED`` name); one line when unknown."""
    if name not in PRETRAINED:
        raise Tf3dganError(f"--pretrained: no shipped model {name!r}; the package has {', '.join(PRETRAINED)}")
    file = FOLDER / f"{name}.npz"
    if not file.is_file():
        raise Tf3dganError(f"{file}: the shipped weights of {name!r} are missing from this installation "
                           "(reinstall tf3dgan)")
    return file


def provenance(name: str) -> dict:
    """The model's ``<name>.json``: the command, the training time, the metrics."""
    return json.loads((path(name).with_suffix(".json")).read_text(encoding="utf-8"))


def pack(checkpoint: str | os.PathLike, name: str, info: dict, folder: str | os.PathLike = FOLDER,
         ema: bool = True) -> tuple[Path, Path]:
    """Write ``<folder>/<name>.npz`` (G's weights of ``checkpoint`` as float16 — its moving average when it has one
    and ``ema`` — under ``g/`` keys, with the checkpoint's metadata) and ``<name>.json`` (``info``, e.g. the
    command and the metrics, plus the checkpoint's epoch and model); returns both paths."""
    from tf3dgan.atomic import atomic_path
    from tf3dgan.training import runs

    arrays, meta = runs.load_checkpoint(Path(checkpoint))
    prefix = "g_ema/" if ema and any(k.startswith("g_ema/") for k in arrays) else "g/"
    weights = {"g/" + k[len(prefix):]: np.asarray(v, np.float16) for k, v in arrays.items() if k.startswith(prefix)}
    keep = {k: meta[k] for k in ("epoch", "model", "precision", "loss", "backend") if k in meta}
    keep.update(pretrained=name, averaged=prefix == "g_ema/")
    folder = Path(folder)
    target = folder / f"{name}.npz"
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **weights, **{runs.META_KEY: np.array(json.dumps(keep))})
    described = folder / f"{name}.json"
    with atomic_path(described) as tmp:
        tmp.write_text(json.dumps({**info, "epoch": meta.get("epoch"), "model": meta.get("model"),
                                   "averaged": prefix == "g_ema/"}, indent=2) + "\n", encoding="utf-8")
    return target, described

"""The run folder: paths, ``config.json``, checkpoints and the exported generator.

Layout (``savepoint/<name>/``)::

    config.json              every setting of the run (written atomically at start)
    <epoch>.npy              generated samples
    plots/  3D_graphs/  logs/  models/
    checkpoints/ckpt-<epoch>.npz   full training state after <epoch> epochs (kept: the newest --keep)
    checkpoints/latest.npz         the newest state: a copy of the newest ckpt (its own file, so
                                   damage to one leaves the other), or an interrupted run's
                                   mid-epoch state
    generator.weights.h5     the generator alone (Keras weights) for generate/sample tools

A checkpoint is one ``.npz`` written to a temporary file and renamed into place, so a
kill at any moment leaves the previous checkpoint loadable.  It holds NumPy arrays only
(weights, optimizer slots, trainer state, RNG state, loss histories) plus a JSON ``meta``
entry, so it is independent of the Keras backend.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from tf3dgan.atomic import atomic_path, write_text
from tf3dgan.errors import CheckpointError, Tf3dganError, numpy_load_reason

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.npz"
GENERATOR_WEIGHTS = "generator.weights.h5"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.npz$")
META_KEY = "__meta__"
LOCK_NAME = ".lock"
#: The folders of a run that only its trainer writes (its stale temporary files are safe to remove).
TRAINER_FOLDERS = ("", CHECKPOINT_DIR, "plots", "3D_graphs")


def run_path(out: str | os.PathLike, name: str) -> Path:
    if not name or Path(name).name != name or name in (".", ".."):
        raise Tf3dganError(f"run name {name!r} must be a plain folder name (no '/' or '..')")
    return Path(out) / name


def sample_files(out: str | os.PathLike, name: str, doing: str = "convert") -> tuple[Path, list[Path]]:
    """A run folder and its ``<epoch>.npy`` samples in epoch order (other ``.npy`` names after them), for the
    tools' ``-n NAME``; a missing folder or no samples is a DataError naming the folder."""
    from tf3dgan.errors import DataError

    folder = run_path(out, name)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such run folder")
    files = sorted(folder.glob("*.npy"),
                   key=lambda p: (0, int(p.stem), "") if re.fullmatch(r"\d+", p.stem) else (1, 0, p.stem))
    if not files:
        raise DataError(f"{folder}: no .npy samples to {doing}")
    return folder, files


from tf3dgan.choices import DEFAULT_THRESHOLD  # noqa: E402  (the original's: grids of no run, linear-output runs)


def model_threshold(model: dict) -> float:
    """A generator's occupancy threshold: 0.5 for a sigmoid output (a probability), else the seed's 0.3."""
    return 0.5 if model.get("output_activation") == "sigmoid" else DEFAULT_THRESHOLD


def run_threshold(run_dir: Path) -> float | None:
    """The occupancy threshold of the run in ``run_dir`` (``config.json``'s ``threshold``, or the one its model
    implies for runs made before it was stored); None when ``run_dir`` holds no readable config.json."""
    path = Path(run_dir) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(config.get("threshold"), (int, float)):
        return float(config["threshold"])
    model = config.get("model")
    return model_threshold(model) if isinstance(model, dict) else None


def threshold_for(path: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
                  given: float | None = None) -> tuple[float, str]:
    """The occupancy threshold a tool uses, and where it came from: ``given`` (``--threshold``) wins; else the
    run's (``run_dir``, or the run a file lies in: ``<run>/<epoch>.npy``, ``<run>/generated/...``,
    ``<run>/models/...``); else the original's 0.3. One threshold per run, so one sample means one shape in
    every tool."""
    if given is not None:
        return float(given), "--threshold"
    candidates = [Path(run_dir)] if run_dir is not None else []
    if path is not None and not str(path).startswith("synthetic:"):
        from tf3dgan.data.datasets import split_npz_key

        p, _ = split_npz_key(os.fspath(path))
        candidates += [p.parent, p.parent.parent]
    for folder in candidates:
        value = run_threshold(folder)
        if value is not None:
            return value, f"the run's ({folder / CONFIG_NAME})"
    return DEFAULT_THRESHOLD, "the default"


def write_config(run_dir: Path, config: dict) -> Path:
    return write_text(Path(run_dir) / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Tf3dganError(f"{path}: no such file (is {run_dir} a tf3dgan run folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Tf3dganError(f"{path}: not valid JSON ({e})") from None


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_path(run_dir: Path, epoch: int | None = None) -> Path:
    """``checkpoints/latest.npz``, or the one saved after ``epoch`` epochs."""
    folder = checkpoint_dir(run_dir)
    return folder / (LATEST if epoch is None else f"ckpt-{int(epoch):06d}.npz")


def saved_epochs(run_dir: Path) -> list[int]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name)))


BEST = "best.npz"


def save_checkpoint(run_dir: Path, arrays: dict[str, np.ndarray], meta: dict, *,
                    numbered: bool = True, keep: int = 0, name: str | None = None) -> Path:
    """Write the state atomically; ``numbered`` also keeps it as ``ckpt-<meta['epoch']>.npz``.

    ``latest.npz`` always ends up holding this state.  ``keep`` > 0 deletes all but the
    newest ``keep`` numbered checkpoints.  Returns the path written.
    """
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if name is not None:   # a checkpoint by name (best.npz): neither numbered nor the latest
        numbered = False
    target = folder / name if name is not None else checkpoint_path(run_dir, meta["epoch"] if numbered else None)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{META_KEY: np.array(json.dumps(meta))})
    if numbered:
        _link_latest(target)
        if keep > 0:
            for epoch in saved_epochs(run_dir)[:-keep]:
                checkpoint_path(run_dir, epoch).unlink(missing_ok=True)
    return target


def _link_latest(target: Path) -> None:
    """``latest.npz`` as its own copy of ``target`` (not a hard link: damage to one file must leave
    the other readable, so ``-l`` and ``-le N`` each still have a checkpoint)."""
    import shutil

    with atomic_path(target.parent / LATEST) as tmp:
        shutil.copyfile(target, tmp)


class RunLock:
    """An exclusive lock on a run folder (``.lock``, holding the trainer's pid), released when the
    process ends however it ends; a second trainer on the same run is refused."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None
        try:
            import fcntl
        except ImportError:   # no flock (Windows): no lock
            return
        try:
            f = open(self.path, "a+")
        except OSError as e:
            from tf3dgan.errors import write_error
            raise write_error(self.path, e) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise Tf3dganError(f"{run_dir} is being trained by another process (pid {pid}); wait for it to "
                               "finish or stop it (Ctrl-C saves) before starting this one") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def lock_run(run_dir: Path) -> RunLock:
    return RunLock(run_dir)


def checkpoint_meta(path: Path) -> dict:
    """A checkpoint's metadata alone (epoch, step, model, ...), without reading its arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise CheckpointError(f"{path}: not a tf3dgan checkpoint (no metadata entry)")
            return json.loads(str(z[META_KEY]))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({numpy_load_reason(e)})"
                              + _other_checkpoints(path)) from None


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint fully (so a damaged file fails here, with its name, not later)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        meta = json.loads(str(arrays.pop(META_KEY)))
    except KeyError:
        raise CheckpointError(f"{path}: not a tf3dgan checkpoint (no metadata entry)") from None
    except Exception as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({numpy_load_reason(e)})"
                              + _other_checkpoints(path)) from None
    return arrays, meta


def _other_checkpoints(path: Path) -> str:
    """For a damaged checkpoint of a run: the other ones it can resume from."""
    if path.parent.name != CHECKPOINT_DIR:
        return ""
    epochs = [e for e in saved_epochs(path.parent.parent) if checkpoint_path(path.parent.parent, e) != path]
    if not epochs:
        return ""
    return f"; the run's other checkpoints: -le {epochs[-1]}" + (f" (saved epochs: {', '.join(map(str, epochs))})"
                                                                  if len(epochs) > 1 else "")


def export_generator(run_dir: Path, generator) -> Path:
    """Save the generator's weights alone (Keras ``.weights.h5``), atomically."""
    path = Path(run_dir) / GENERATOR_WEIGHTS
    with atomic_path(path) as tmp:
        tmp.unlink()
        generator.save_weights(str(tmp))
    return path


def generator_source(run_dir: Path | None = None, weights: Path | None = None, epoch: int | None = None) -> Path:
    """The file ``load_generator`` reads (see there); a missing one is a CheckpointError naming it."""
    run_dir = None if run_dir is None else Path(run_dir)
    if weights is not None:
        source = Path(weights)
    elif run_dir is None:
        raise Tf3dganError("load_generator needs a run folder or a weights file")
    elif epoch is not None:
        source = checkpoint_path(run_dir, epoch)
        if not source.is_file():
            have = ", ".join(map(str, saved_epochs(run_dir))) or "none"
            raise CheckpointError(f"{source}: no checkpoint of epoch {epoch} (saved epochs: {have})")
    else:
        source = checkpoint_path(run_dir)
        if not source.is_file():
            source = run_dir / GENERATOR_WEIGHTS
    if not source.is_file():
        raise CheckpointError(f"{source}: no such weights file (a run writes checkpoints/ and {GENERATOR_WEIGHTS} "
                              "at every -save epoch)")
    if source.suffix.lower() not in (".npz", ".h5"):
        what = " (a .npy holds voxel grids, e.g. a run's samples, not weights)" if source.suffix.lower() == ".npy" else ""
        raise CheckpointError(f"{source}: not a checkpoint{what}; give a checkpoint .npz "
                              f"(checkpoints/ckpt-NNNNNN.npz, latest.npz) or a {GENERATOR_WEIGHTS} file")
    return source


def load_generator(run_dir: Path | None = None, weights: Path | None = None, epoch: int | None = None,
                   dtype_policy: str | None = "float32", ema: bool = True):
    """Rebuild a run's generator and load its weights; returns ``(generator, source_path)``.

    Sources, in order: ``weights`` (a checkpoint ``.npz``, self-describing, or a ``.weights.h5`` with the
    run's ``config.json`` from ``run_dir`` or beside it); the checkpoint of ``epoch``; the run's newest
    state (``checkpoints/latest.npz``, else ``generator.weights.h5``).  A checkpoint of a ``--g-ema`` run gives
    G's moving average (what the run sampled), or with ``ema=False`` the raw G; a ``.weights.h5`` holds
    what the run exported (the average, for such a run).  ``generator.moving_average`` says which it is."""
    source = generator_source(run_dir, weights, epoch)
    from tf3dgan.models.networks import build_from_config
    from tf3dgan.training import checkpoint_keys
    if source.suffix == ".npz":
        arrays, meta = load_checkpoint(source)
        if "model" not in meta:
            raise CheckpointError(f"{source}: checkpoint metadata has no model description")
        generator, _ = build_from_config(meta["model"], dtype_policy=dtype_policy)
        averaged = ema and any(k.startswith("g_ema/") for k in arrays)
        checkpoint_keys.load_model_weights(generator, "g_ema" if averaged else "g", arrays, str(source))
        generator.moving_average = averaged or bool(meta.get("averaged"))   # a shipped model (tf3dgan.pretrained)
        return generator, source
    config_dir = Path(run_dir) if run_dir is not None else source.parent
    config = read_config(config_dir)
    generator, _ = build_from_config(config["model"], dtype_policy=dtype_policy)
    generator.moving_average = bool((config.get("settings") or {}).get("g_ema"))
    try:
        generator.load_weights(str(source))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{source}: cannot load generator weights ({type(e).__name__}: {e})") from None
    return generator, source

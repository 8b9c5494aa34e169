"""Quality of a run's shapes (or any voxel set) against a reference set: what ``tools/evaluate.py`` does.

:func:`evaluate` gathers the two sets — samples drawn from a run's generator at fixed seeds (or read from a
``.npy`` batch or any ``-d`` source), and the reference (by default the run's ``-v`` data) — brings them to one
resolution (pooling the finer one down by the data rule), thresholds generated grids at the run's own
threshold, picks the real-vs-real floor set (the run's training data, else half of the reference), and hands
them to :func:`tf3dgan.metrics.evaluate_sets`. The result is a flat dict (``mmd_iou``, ``cov_iou``,
``nna_iou``, ``mmd_cd``, ..., ``floor``) that is written to ``<run>/metrics/<epoch>.json``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.training import runs


@dataclass
class Sets:
    """The two sets (0/1 uint8 grids, one resolution) and where they came from."""

    samples: np.ndarray
    reference: np.ndarray
    floor: np.ndarray | None
    resolution: int
    threshold: float
    sample_source: str
    reference_source: str
    floor_source: str | None
    epoch: int | None = None
    run_dir: Path | None = None


def _to_resolution(grids: np.ndarray, resolution: int, pool_min: int, what: str) -> np.ndarray:
    from tf3dgan.data import datasets as data

    dim = grids.shape[1]
    if dim == resolution:
        return grids
    factor = data.pool_factor(dim, resolution, pool_min, what)
    return data.unpack(data.pool(data.pack(grids), dim, factor, pool_min), resolution)


def _load_set(spec: str, resolution: int | None, pool_min: int, seed: int) -> np.ndarray:
    """All grids of a ``-d`` source as uint8 0/1, pooled to ``resolution`` (None: as stored)."""
    from tf3dgan.data import datasets as data

    return data.load_dataset(spec, resolution=resolution, pool_min=pool_min, seed=seed).grids()


def _pick(grids: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` grids of ``grids`` chosen at random without replacement (seeded); all when there are fewer."""
    if len(grids) <= count:
        return grids
    return grids[np.sort(np.random.default_rng(seed).choice(len(grids), count, replace=False))]


def gather(*, run: str | None = None, out: str = "savepoint", load_epoch: int | None = None,
           samples: str | None = None, reference: str | None = None, count: int | None = None,
           resolution: int | None = None, threshold: float | None = None, pool_min: int | None = None, seed: int = 0,
           floor: str | None = None, batch: int = 16, metrics=None, ema: bool = True, report=print) -> Sets:
    """Collect the sample, reference and floor sets (see the module docstring); everything that can be
    checked without Keras is checked first."""
    from tf3dgan.data import datasets as data

    if (run is None) == (samples is None):
        raise Tf3dganError("say what to evaluate: -n RUN (samples drawn from its generator) or --samples FILE")
    if count is not None and count < 2:
        raise Tf3dganError(f"--count must be at least 2, got {count}")
    check_metrics(metrics)
    if resolution is not None and (resolution < 8 or resolution & (resolution - 1)):
        raise Tf3dganError(f"--resolution must be a power of two >= 8, got {resolution}")
    run_dir, config, epoch = None, None, None
    if run is not None:
        run_dir = runs.run_path(out, run)
        if not run_dir.is_dir():
            raise Tf3dganError(f"{run_dir}: no such run folder (check -n and --out)")
        config = runs.read_config(run_dir)
        source = runs.generator_source(run_dir, epoch=load_epoch)   # a missing checkpoint answers now
        if source.suffix == ".npz":
            epoch = int(runs.checkpoint_meta(source).get("epoch", 0))
    settings = (config or {}).get("settings", {})
    if pool_min is None:   # the run's own pooling rule, so its data and its evaluations agree
        pool_min = int(settings.get("pool_min") or 1)
    if pool_min < 1:
        raise Tf3dganError(f"--pool-min must be at least 1, got {pool_min}")
    if reference is None:
        reference = settings.get("validation_data") or None
        if reference is None:
            raise Tf3dganError("give --reference (e.g. ../shared/data/voxels/modelnet10_chair_64_win.npz:test)"
                               + (f": {run_dir} was trained without -v" if run_dir else ""))
    ref_grids = _load_set(reference, None, 1, seed)
    if len(ref_grids) < 2:
        raise DataError(f"{reference}: {len(ref_grids)} reference shape; the set metrics need at least 2")

    if samples is not None:
        path, _ = data.split_npz_key(os.fspath(samples))
        if path.suffix.lower() == ".npy" and path.is_file():
            from tf3dgan.outputs.mesh import load_grids

            values = load_grids(path)
            if values.ndim == 3:
                values = values[None]
            data.check_finite(values, str(path))
            threshold, _ = runs.threshold_for(path, given=threshold)
            sample_grids = (values > threshold).astype(np.uint8)
        else:   # any -d source: 0/1 grids already
            sample_grids = _load_set(samples, None, 1, seed)
            threshold = 0.5 if threshold is None else threshold
        sample_source = os.fspath(samples)
    else:
        threshold = runs.run_threshold(run_dir) if threshold is None else threshold
        n = count or len(ref_grids)
        sample_grids, averaged = _generate(run_dir, load_epoch, n, seed, batch, threshold, ema)
        sample_source = f"{run_dir} ({'epoch ' + str(epoch) if epoch is not None else 'generator'}, "\
                        f"{'the moving average of G, ' if averaged else ''}seeds: latents of --seed {seed})"
    if len(sample_grids) < 2:
        raise DataError(f"{sample_source}: {len(sample_grids)} sample{'s' * (len(sample_grids) != 1)}; the set "
                        "metrics compare sets: give at least 2 (e.g. a batch from tools/generate.py --count 99)")
    n = count or len(ref_grids)   # PointFlow's protocol: as many samples as references
    sample_grids, ref_grids = _pick(sample_grids, n, seed), _pick(ref_grids, n, seed)

    res = resolution or min(sample_grids.shape[1], ref_grids.shape[1])
    for what, dim in (("--samples" if samples else "the run's samples", sample_grids.shape[1]),
                      ("--reference", ref_grids.shape[1])):
        if dim < res:
            raise DataError(f"{what} are {dim}³ and cannot be pooled up to --resolution {res}; give --resolution "
                            f"{dim} or lower")
    sample_grids = _to_resolution(sample_grids, res, pool_min, "samples")
    ref_grids = _to_resolution(ref_grids, res, pool_min, "reference")
    if not sample_grids.reshape(len(sample_grids), -1).any(axis=1).any():
        raise DataError(f"{sample_source}: every sample is empty at threshold {threshold:g}")

    floor_grids, floor_source = None, None
    floor = floor or settings.get("data") or None
    if floor:
        try:
            grids = _load_set(floor, res, pool_min, seed + 1)
        except DataError as e:
            report(f"note: real-vs-real floor from half of the reference instead ({floor}: {e})")
        else:
            floor_grids, floor_source = _pick(grids, len(ref_grids), seed + 1), os.fspath(floor)
    return Sets(sample_grids, ref_grids, floor_grids, res, float(threshold), sample_source, os.fspath(reference),
                floor_source, epoch, run_dir)


def _generate(run_dir: Path, load_epoch: int | None, count: int, seed: int, batch: int, threshold: float,
              ema: bool = True):
    from tf3dgan.cli import import_tensorflow_quietly, keras_backend
    from tf3dgan.outputs import sampling

    import_tensorflow_quietly(required=keras_backend() == "tensorflow")
    generator, _ = runs.load_generator(run_dir, epoch=load_epoch, ema=ema)
    z = sampling.latents(count, generator.spec.latent_dim, seed)
    return (sampling.generate(generator, z, batch) > threshold).astype(np.uint8), generator.moving_average


def check_metrics(metrics) -> None:
    """Unknown metric names are one line, before any data is read."""
    from tf3dgan.metrics import list_metrics

    for name in metrics or ():
        for part in str(name).split(","):
            if part and part != "all" and part not in list_metrics():
                raise Tf3dganError(f"--metrics: unknown metric {part!r}; choose from {' '.join(list_metrics())} or all")


def evaluate(sets: Sets, metrics=None, seed: int = 0, report=print) -> dict:
    """The metrics of ``sets`` (see :func:`tf3dgan.metrics.evaluate_sets`), with where the sets came from."""
    from tf3dgan.metrics import ALL, evaluate_sets
    from tf3dgan.metrics.registry import CLASSIFIER_RESOLUTION

    check_metrics(metrics)
    names = [p for m in (metrics or ALL) for p in str(m).split(",") if p]
    names = list(ALL) if "all" in names else names
    small = sets.resolution < CLASSIFIER_RESOLUTION
    if small and {"fid", "kid"} & set(names):
        if metrics:
            raise Tf3dganError(f"fid/kid use the 32³ classifier; these sets are {sets.resolution}³ (grids can be "
                               "pooled down, not up): drop fid/kid from --metrics")
        names = [n for n in names if n not in ("fid", "kid")]
        report(f"note: fid and kid skipped: the classifier takes 32³ grids and these are {sets.resolution}³")
    try:
        result = evaluate_sets(sets.samples, sets.reference, metrics=tuple(names),
                               floor=sets.floor if sets.floor is not None else None, seed=seed)
    except ValueError as e:   # sets the metrics cannot compare
        raise DataError(f"cannot evaluate {sets.sample_source} against {sets.reference_source}: {e}") from None
    result.update(samples=sets.sample_source, reference=sets.reference_source, threshold=sets.threshold,
                  seed=seed)
    if sets.floor_source is not None:
        result["floor_set"] = sets.floor_source
    if sets.epoch is not None:
        result["epoch"] = sets.epoch
    return result


def write_result(result: dict, sets: Sets, output: str | None = None) -> Path | None:
    """``<run>/metrics/<epoch>.json`` for a run (or ``output``); None when there is nowhere to write."""
    from tf3dgan.atomic import write_text

    if output is not None:
        path = Path(output)
    elif sets.run_dir is not None:
        path = sets.run_dir / "metrics" / f"{sets.epoch if sets.epoch is not None else 'generator'}.json"
    else:
        return None
    return write_text(path, json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")


def svm(run_dir: Path, epoch: int | None, data_dir: str, seed: int = 0, limit: int | None = None,
        report=print) -> dict:
    """The 3D-GAN protocol (:func:`tf3dgan.metrics.svm.svm_protocol`) for the run's D and, as its baseline,
    for an untrained D of the same architecture; JSON-ready."""
    from tf3dgan.metrics.svm import svm_protocol

    def slim(r: dict) -> dict:
        keys = ("svm_accuracy", "mean_class_accuracy", "per_class", "C", "n_train", "n_test", "feature_dim",
                "layers", "resolution", "epoch", "source", "seconds")
        return {k: r[k] for k in keys if k in r}

    trained = svm_protocol(run_dir, epoch, data_dir=data_dir, seed=seed, limit=limit, report=report)
    baseline = svm_protocol(run_dir, epoch, data_dir=data_dir, seed=seed, limit=limit, report=report, untrained=True)
    return {**slim(trained), "untrained": slim(baseline), "paper_accuracy": 0.910, "limit": limit}


def describe_svm(r: dict) -> str:
    return (f"3D-GAN SVM (D features, ModelNet10 test split, {r['n_test']} grids): {r['svm_accuracy']:.1%} "
            f"(untrained D of the same architecture: {r['untrained']['svm_accuracy']:.1%}; 3D-GAN's: 91.0 %)")


@dataclass
class Evaluation:
    """What :func:`run_evaluation` measured (``result``, JSON-ready) and where it wrote it (``path``, or None)."""

    result: dict
    sets: Sets
    path: Path | None

    def text(self) -> str:
        """The result as the table (and the SVM line) the tool prints."""
        from tf3dgan.metrics.registry import describe

        return describe(self.result) + (f"\n{describe_svm(self.result['svm'])}" if "svm" in self.result else "")


def run_evaluation(*, run: str | None = None, samples: str | None = None, out: str = "savepoint",
                   load_epoch: int | None = None, reference: str | None = None, floor: str | None = None,
                   count: int | None = None, resolution: int | None = None, pool_min: int | None = None,
                   threshold: float | None = None, metrics=None, with_svm: bool = False,
                   svm_data: str = "../shared/data/voxels", svm_limit: int | None = None, seed: int = 0,
                   batch: int = 16, output: str | None = None, ema: bool = True, report=print) -> Evaluation:
    """Everything ``tools/evaluate.py`` does: :func:`gather` the sets, :func:`evaluate` them, with ``with_svm`` add
    the 3D-GAN SVM protocol of the run's D (:func:`svm`), and :func:`write_result` (to ``output``, else the run's
    ``metrics/<epoch>.json``). ``report`` hears the progress lines."""
    if with_svm and run is None:
        raise Tf3dganError("--svm scores a run's discriminator: give -n RUN")
    sets = gather(run=run, out=out, load_epoch=load_epoch, samples=samples, reference=reference, count=count,
                  resolution=resolution, threshold=threshold, pool_min=pool_min, seed=seed, floor=floor,
                  batch=batch, metrics=metrics, ema=ema, report=report)
    result = evaluate(sets, metrics, seed, report=report)
    if with_svm:
        result["svm"] = svm(sets.run_dir, load_epoch, svm_data, seed, svm_limit, report=report)
    return Evaluation(result, sets, write_result(result, sets, output))

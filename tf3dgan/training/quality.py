"""Quality during training (``--eval-every N``): the fast metrics of fixed-seed samples against real shapes.

Every N epochs the trainer draws ``--eval-count`` samples from fixed latent vectors (their own NumPy stream,
so the training's random streams are untouched and a resumed run still continues exactly), thresholds them
at the run's threshold and scores them against the ``-v`` data (else the training grids held back for it)
with :func:`tf3dgan.metrics.evaluate_sets`. Each evaluation is a line of ``<run>/metrics.jsonl``, ``quality/*``
scalars in TensorBoard and, when its 1-NNA is the best so far, ``checkpoints/best.npz``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tf3dgan.atomic import write_text

METRICS_FILE = "metrics.jsonl"
#: The metrics computed during training: the fast ones (no surface sampling, no classifier).
TRAIN_METRICS = ("iou", "jsd")
_LATENT_STREAM = 0x5EED   # the eval latents' own stream (added to --seed), apart from the training's
_CHUNK = 16               # generator batch: one shape, so the sampling function traces once


class Evaluator:
    """The train-time evaluation of one run: fixed latents and reference, the metrics file, the best so far."""

    def __init__(self, run_dir: Path, reference: np.ndarray, reference_source: str, count: int, latent_dim: int,
                 seed: int, threshold: float, metrics=TRAIN_METRICS):
        self.path = Path(run_dir) / METRICS_FILE
        self.reference, self.reference_source = reference, reference_source
        self.count, self.threshold, self.metrics, self.seed = count, float(threshold), tuple(metrics), seed
        self.latents = np.random.default_rng(seed + _LATENT_STREAM).standard_normal((count, latent_dim)).astype(np.float32)
        self.latest: dict | None = None
        self._cache: dict = {}   # the reference side of the metrics, computed once for all evaluations

    def records(self) -> list[dict]:
        """The evaluations written so far (a damaged line is skipped: the file is a log, not a checkpoint)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def best(self, before_epoch: int | None = None) -> float | None:
        values = [r["nna_iou"] for r in self.records()
                  if "nna_iou" in r and (before_epoch is None or r.get("epoch", 0) < before_epoch)]
        return min(values) if values else None

    def samples(self, generate) -> np.ndarray:
        """``count`` 0/1 grids from ``generate(z) -> (n, D, H, W)`` float, in fixed-size chunks."""
        out = []
        for start in range(0, self.count, _CHUNK):
            z = self.latents[start:start + _CHUNK]
            n = len(z)
            if n < _CHUNK:
                z = np.concatenate([z, np.zeros((_CHUNK - n, z.shape[1]), np.float32)])
            out.append(generate(z)[:n])
        return (np.concatenate(out) > self.threshold).astype(np.uint8)

    def evaluate(self, generate, epoch: int, step: int) -> tuple[dict, bool]:
        """Score the generator at ``epoch``; append the line to ``metrics.jsonl``; returns (record, best so far)."""
        from tf3dgan.metrics import evaluate_sets

        samples = self.samples(generate)
        result = evaluate_sets(samples, self.reference, metrics=self.metrics, seed=self.seed, spread_subsets=0,
                               floor=False, cache=self._cache)
        record = {"epoch": epoch, "step": step, "n_samples": len(samples), "n_reference": len(self.reference),
                  "reference": self.reference_source, "threshold": self.threshold,
                  **{k: v for k, v in result.items() if isinstance(v, (int, float)) and k not in ("n_samples",
                                                                                                  "n_reference")}}
        previous = self.best(before_epoch=epoch)
        kept = [r for r in self.records() if r.get("epoch", 0) < epoch]   # a run resumed from earlier rewrites on
        write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in [*kept, record]))
        self.latest = record
        nna = record.get("nna_iou")
        return record, nna is not None and (previous is None or nna < previous)

    def summary(self) -> str:
        """``1-NNA 0.91 COV 0.23`` of the latest evaluation, for the epoch line ('' when there is none)."""
        r = self.latest
        if not r or "nna_iou" not in r:
            return ""
        return f"  1-NNA {r['nna_iou']:.3f} COV {r['cov_iou']:.2f}"


def hold_back(dataset, count: int, seed: int):
    """Split ``dataset`` into (training part, ``count`` held-back grids) by a seeded draw; the held-back grids
    are the reference of ``--eval-every`` when there is no ``-v``."""
    from tf3dgan.data.datasets import VoxelDataset

    rng = np.random.default_rng(seed + _LATENT_STREAM + 1)
    held = np.zeros(len(dataset), bool)
    held[rng.choice(len(dataset), count, replace=False)] = True
    keep, back = np.flatnonzero(~held), np.flatnonzero(held)
    names = dataset.names
    part = lambda idx, note: VoxelDataset(np.ascontiguousarray(dataset.packed[idx]), dataset.dim,  # noqa: E731
                                          [names[i] for i in idx], f"{dataset.source} ({note})",
                                          pooled_from=dataset.pooled_from, pool_min=dataset.pool_min)
    return part(keep, f"{len(keep)} for training"), part(back, f"{len(back)} held back for --eval-every")

"""``RunOutputs``: everything a training run writes into its run folder, on the original's schedule.

``config.json`` (at start), the generated sample ``<epoch>.npy`` (``-sample``), the loss graph
``plots/<epoch>.png`` and its raw curves ``plots/track_*.npy`` (``-graph``), the 3D graph
``3D_graphs/<epoch>.png`` (``-graph3d``), the checkpoints and the exported generator (``-save``; ``best.npz``
by 1-NNA), TensorBoard summaries in ``logs/`` (:mod:`.summaries`) and the ``--eval-every`` evaluations
(:mod:`.quality`). The workers other than 0 of a multi-worker run write into a temporary folder instead.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tf3dgan.atomic import atomic_path
from tf3dgan.training import runs
from tf3dgan.training.build import Run
from tf3dgan.training.plan import CONFIG_FORMAT, PER_INVOCATION
from tf3dgan.training.summaries import SummaryWriter


class RunOutputs:
    """The outputs of one built :class:`~tf3dgan.training.build.Run`; opening them writes ``config.json``
    (unless an exact resume leaves it as it was) and starts the TensorBoard writer."""

    def __init__(self, run: Run):
        self.run = run
        cfg = run.cfg
        self.dir = run.plan.dir
        if run.worker != 0:   # multi-worker: only the chief (worker 0) writes the run folder
            self.dir = Path(tempfile.mkdtemp(prefix=f"tf3dgan-worker{run.worker}-")) / cfg.name
        self.sample_z = np.random.default_rng(cfg.seed).standard_normal(
            (1, run.spec["latent_dim"])).astype(np.float32)   # the same latent vector for every sample
        self.write_config()
        self.writer = SummaryWriter(self.dir / "logs")
        self.evaluator = self._make_evaluator() if cfg.eval_every else None

    # -------------------------------------------------------------- setup
    def _make_evaluator(self):
        from tf3dgan.training.quality import Evaluator

        run, cfg = self.run, self.run.cfg
        ref = run.val if run.val is not None else run.plan.held_back
        n = min(cfg.eval_count, len(ref))
        idx = np.sort(np.random.default_rng(cfg.seed + 2).choice(len(ref), n, replace=False))
        return Evaluator(self.dir, ref.grids(idx), ref.source, n, run.spec["latent_dim"], cfg.seed, run.threshold)

    def config(self) -> dict:
        """``config.json``: every setting (a resumed run's own, with the changes asked for), model, data, ..."""
        run, plan = self.run, self.run.plan
        settings = run.cfg.to_dict()
        saved = plan.saved
        if saved is not None:   # a resumed run: its own settings, with the changes the user asked for
            settings = dict(saved.get("settings") or {}, **{key: new for key, _, new in plan.changes})
            for key in set(run.cfg.to_dict()) - set(settings) - set(PER_INVOCATION):
                settings[key] = getattr(run.cfg, key)   # settings newer than the run's config.json
        data = {"source": run.data.source, "count": len(run.data), "dim": run.data.dim}
        if run.data.pooled_from:
            data.update(pooled_from=run.data.pooled_from, pool_min=run.data.pool_min)
        trainer = run.trainer
        return {"tf3dgan": __import__("tf3dgan").__version__, "format": CONFIG_FORMAT, "settings": settings,
                "model": run.spec, "precision": run.precision, "batch_size": run.batch,
                "data": data,
                "validation": None if run.val is None else {"source": run.val.source, "count": len(run.val)},
                "steps_per_epoch": trainer.steps_per_epoch, "lr_schedule": plan.schedule,
                "loss": trainer.objective.name, "d_rule": trainer.d_rule, "backend": run.backend.name,
                "replicas": run.replicas, "threshold": run.threshold}

    def write_config(self) -> None:
        config, saved = self.config(), self.run.plan.saved
        if saved is not None and _same_json(saved, config):
            return   # an exact resume leaves config.json as it was
        runs.write_config(self.dir, config)

    # -------------------------------------------------------------- per epoch
    def end_of_epoch(self, results: dict, seconds: float) -> None:
        """After a complete epoch: the evaluation and the epoch line, the scalars, and what is due of the
        sample, loss graph, 3D graph, checkpoint and generator export."""
        run, cfg, e = self.run, self.run.cfg, self.run.epoch
        n = len(results["d_loss"])
        rate = n * run.batch / max(seconds, 1e-9)
        val = float(np.nanmean(results["val_loss"])) if run.val is not None else float("nan")
        g_lr, d_lr = run.trainer.learning_rates
        due = lambda every: e % every == 0 or e == cfg.epochs  # noqa: E731
        if self.evaluator is not None and due(cfg.eval_every):
            self.evaluate()
        line = (f"epoch {e}/{cfg.epochs}  d_loss {results['d_loss'].mean():.4f}  g_loss {results['g_loss'].mean():.4f}"
                + (f"  val_d_loss {val:.4f}" if run.val is not None else "")
                + f"  D trained {results['d_trained'].mean():.0%}  G/D ratio {int(results['ratio'][-1])}"
                + f"  {rate:.1f} samples/s  {seconds:.1f}s"
                + (self.evaluator.summary() if self.evaluator is not None else ""))
        tqdm.write(line)
        self.log_scalars(results, rate, g_lr, d_lr)
        grid = run.trainer.generate(self.sample_z[:1])[0] if due(cfg.sample) or due(cfg.graph3d) else None
        if due(cfg.sample):
            self.save_sample(grid)
        if due(cfg.graph):
            self.save_loss_graph()
        if due(cfg.graph3d):
            self.save_graph3d(grid)
        if due(cfg.save):
            self.save(numbered=True)
            self.export_generator()
        self.writer.flush()

    def save_sample(self, grid: np.ndarray) -> None:
        with atomic_path(self.dir / f"{self.run.epoch}.npy") as tmp:
            np.save(tmp, grid.astype(np.float32))

    def save_loss_graph(self) -> None:
        from tf3dgan.outputs import plots  # matplotlib and scipy load when the first graph is due, not before the checks

        run = self.run
        h = run.history
        val = h["val_loss"] if run.val is not None else None
        g_lr, d_lr = run.trainer.learning_rates
        plots.save_loss_plot(self.dir / "plots" / f"{run.epoch}.png", h["d_loss"], h["g_loss"], h["epoch"], val,
                             title=f"{run.label} {run.trainer.objective.name} "
                                   f"[lrG={g_lr:.5f}, lrD={d_lr:.5f}]")
        names = {"d_loss": "track_d_loss", "g_loss": "track_g_loss", "val_loss": "track_d_validation_loss",
                 "epoch": "epochs", "d_trained": "track_d_trained", "ratio": "track_gd_ratio"}
        if run.val is None:   # no -v: no validation curve
            del names["val_loss"]
        for key, stem in names.items():
            with atomic_path(self.dir / "plots" / f"{stem}.npy") as tmp:
                np.save(tmp, h[key])

    def save_graph3d(self, grid: np.ndarray) -> None:
        from tf3dgan.outputs import plots

        run = self.run
        threshold = run.threshold
        title = f"{run.label} [Epoch={run.epoch}]"
        plots.save_voxel_graph(self.dir / "3D_graphs" / f"{run.epoch}.png", grid, title, threshold,
                               style=run.cfg.graph_style)
        step = run.steps   # TensorBoard: one step axis (global train steps) for everything
        self.writer.image("sample/graph", plots.voxel_graph_image(grid, title, threshold, style="shaded"), step)
        points = plots.surface_voxels(grid, threshold).astype(np.float32)
        height = points[:, 1] / max(grid.shape[1] - 1, 1)
        colors = np.stack([255 * height, 96 + 0 * height, 255 * (1 - height)], -1).astype(np.uint8)
        self.writer.points("sample/voxels", points, colors, step)

    # -------------------------------------------------------------- TensorBoard
    def log_step_scalars(self, results) -> None:
        """Per-step losses, at global step numbers (the history already holds these steps)."""
        n = len(results.get("d_loss", ()))
        series = {"loss/d": results["d_loss"], "loss/g": results["g_loss"]}
        if self.run.val is not None:
            series["loss/d_validation"] = results["val_loss"]
        self.writer.scalar_series(self.run.steps - n + 1, series)

    def log_scalars(self, results, rate, g_lr, d_lr) -> None:
        self.log_step_scalars(results)
        self.writer.scalars(self.run.steps, {
            "train/d_trained_fraction": results["d_trained"].mean(), "train/gd_train_ratio": results["ratio"][-1],
            "train/d_accuracy": results["d_accuracy"].mean(), "lr/g": g_lr, "lr/d": d_lr,
            "train/loss_scale": results["loss_scale"][-1], "perf/samples_per_s": rate, "train/epoch": self.run.epoch})

    def flush(self) -> None:
        self.writer.flush()

    # -------------------------------------------------------------- quality, checkpoints, export
    def evaluate(self) -> None:
        """Score the generator now (metrics.jsonl, quality/* scalars); keep checkpoints/best.npz for the best 1-NNA."""
        run = self.run
        step = run.steps
        record, best = self.evaluator.evaluate(run.trainer.generate, run.epoch, step)
        self.writer.scalars(step, {f"quality/{k}": v for k, v in record.items()
                                   if k not in ("epoch", "step", "n_samples", "n_reference", "threshold")
                                   and isinstance(v, (int, float))})
        if best:
            self.save(numbered=False, name=runs.BEST)

    def save(self, numbered: bool, name: str | None = None) -> Path:
        """A checkpoint of the whole training state and history (``numbered``: also ``ckpt-<epoch>.npz``)."""
        run = self.run
        arrays = run.trainer.state_arrays()
        arrays.update({f"history/{k}": v for k, v in run.history.items()})
        meta = {"epoch": run.epoch, "step_in_epoch": run.trainer.position, "model": run.spec,
                "precision": run.precision, "loss": run.trainer.objective.name, "backend": run.backend.name,
                "time": time.time(), "manifest": run.trainer.manifest()}   # key -> the variable's path, shape, dtype
        return runs.save_checkpoint(self.dir, arrays, meta, numbered=numbered, keep=run.cfg.keep, name=name)

    def export_generator(self) -> Path:
        """``generator.weights.h5``: the trained weights (G's moving average with ``--g-ema``) copied into the Keras
        generator first."""
        self.run.trainer.sync_models()
        return runs.export_generator(self.dir, self.run.trainer.sampler)

    def last_checkpoint(self) -> str:
        """The newest numbered checkpoint's name, for messages (``none yet``)."""
        epochs = runs.saved_epochs(self.dir)
        return f"ckpt-{epochs[-1]:06d}.npz" if epochs else "none yet"


def _same_json(a: dict, b: dict) -> bool:
    """Equal once written as JSON (tuples and lists alike)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

"""The training run: settings, data, models, the epoch loop, outputs, checkpoints, resume.

``fit(TrainConfig(...))`` is what ``tools/train.py`` calls.  Per epoch it runs
``steps_per_epoch`` compiled steps (``steps_per_call`` at a time), reads the per-step
metrics back once at the end of the epoch, and writes the run folder's outputs on the
original's schedule (``-sample``, ``-save``, ``-graph``, ``-graph3d`` epochs).
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tf3dgan.atomic import atomic_path
from tf3dgan.errors import Tf3dganError
from tf3dgan.spec import describe, make_spec
from tf3dgan.training import runs
from tf3dgan.training.plan import (  # noqa: F401
    MODEL_FLAGS,
    PER_INVOCATION,
    RunPlan,
    TrainConfig,
    describe_change,
    lr_at,
    parse_lr_schedule,
    prepare,
    resume_command,
)
from tf3dgan.training.summaries import SummaryWriter

HISTORY_KEYS = ("d_loss", "g_loss", "val_loss", "d_trained", "ratio", "d_accuracy", "loss_scale", "epoch")


# ---------------------------------------------------------------------- signals
class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes the current call, saves, and exits 0.
    A second signal stops at once."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():   # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------- the run
class _Run:
    """State and outputs of one training run (the body of ``fit``), built from a :class:`RunPlan`."""

    def __init__(self, plan: RunPlan):
        import keras

        from tf3dgan.models.networks import build_models

        backend = keras.backend.backend()
        if backend == "tensorflow":
            from tf3dgan.training.backends.tensorflow import GANTrainer as Trainer
            from tf3dgan.training.backends.tensorflow import default_precision, tune_for_device
        elif backend == "jax":
            from tf3dgan.training.backends.jax import JaxGANTrainer as Trainer
            from tf3dgan.training.backends.jax import default_precision, tune_for_device
        else:
            raise Tf3dganError(f"the trainer runs on Keras' TensorFlow or JAX backend, but KERAS_BACKEND is "
                               f"{backend!r}; set KERAS_BACKEND=tensorflow (default) or jax")
        cfg = plan.cfg
        self.plan, self.cfg, self.backend = plan, cfg, backend
        if backend == "jax" and plan.saved is not None:   # TensorFlow-only switches inherited from the run's config
            for key, flag, off in (("deterministic", "--deterministic", False), ("sync_bn", "--no-sync-bn", True)):
                if getattr(cfg, key) != off and key not in plan.given:
                    print(f"note: the run was started with {flag}, a TensorFlow setting; not used under JAX")
                    setattr(cfg, key, off)
        self.dir, self.data, self.val, self.schedule = plan.dir, plan.data, plan.val, plan.schedule
        self.strategy, self.worker = self._make_strategy(), 0
        if self.strategy is not None and cfg.xla and backend == "tensorflow":
            raise Tf3dganError("--xla does not go with a multi-device --strategy (use --strategy one with --xla)")
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is not None:   # MultiWorkerMirroredStrategy
            self.worker = int(resolver.task_id or 0)
        tune_for_device()
        if cfg.deterministic:
            if backend != "tensorflow":
                raise Tf3dganError("--deterministic is a TensorFlow setting; under JAX use XLA_FLAGS="
                                   "--xla_gpu_deterministic_ops=true on GPU (CPU runs are deterministic)")
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(cfg.seed)

        model_cfg = plan.model
        if model_cfg is None:
            model_cfg = make_spec(cfg.arch or "rasgan64", 1.0 if cfg.width is None else cfg.width, self.data.dim,
                                  cfg.output_activation).to_dict()
        self.spec = model_cfg
        self.threshold = runs.model_threshold(model_cfg)   # the run's one occupancy threshold (config.json)
        for key in MODEL_FLAGS:   # config.json's settings name the model trained
            setattr(cfg, key, model_cfg[key])
        batch = cfg.batchsize
        if batch > len(self.data):
            print(f"warning: batch size {batch} is larger than the {len(self.data)} training grids in "
                  f"{self.data.source}; using batch size {len(self.data)}")
            batch = len(self.data)
        if self.strategy is None:
            replicas = 1
        elif backend == "jax":   # a keras.distribution.DataParallel
            replicas = int(self.strategy.device_mesh.devices.size)
        else:                    # a tf.distribute strategy
            replicas = int(self.strategy.num_replicas_in_sync)
        if batch % replicas:
            raise Tf3dganError(f"batch size {batch} does not split evenly over the {replicas} replicas of "
                               f"--strategy {cfg.strategy}; use a multiple of {replicas}")
        self.batch, self.replicas = batch, replicas
        self.precision = cfg.precision or default_precision()

        g_lr, d_lr = lr_at(self.schedule, 0)
        kwargs = dict(batch_size=batch, loss=cfg.loss, d_rule=cfg.d_rule, g_lr=g_lr, d_lr=d_lr,
                      precision=self.precision, seed=cfg.seed, xla=cfg.xla,
                      validation_packed=None if self.val is None else self.val.packed)
        build = dict(model_cfg, dtype_policy=self.precision, conv_transpose=cfg.conv_transpose)
        if self.strategy is None:
            self.G, self.D = build_models(**build)
        elif backend == "jax":   # the models stay plain; the trainer shards its step over the mesh
            self.G, self.D = build_models(**build)
            kwargs["distribution"] = self.strategy
        else:
            with self.strategy.scope():
                self.G, self.D = build_models(**build, synchronized_bn=cfg.sync_bn)
            kwargs["strategy"] = self.strategy
        self.trainer = Trainer(self.G, self.D, self.data.packed, self.data.dim, **kwargs)
        self.sample_z = np.random.default_rng(cfg.seed).standard_normal(
            (1, model_cfg["latent_dim"])).astype(np.float32)   # the same latent vector for every sample
        self.history = {k: np.zeros(0, np.float32) for k in HISTORY_KEYS}
        self.epoch = 0
        if plan.checkpoint is not None:
            self._restore(plan.checkpoint)
        if self.worker != 0:   # multi-worker: only the chief (worker 0) writes the run folder
            import tempfile

            self.dir = Path(tempfile.mkdtemp(prefix=f"tf3dgan-worker{self.worker}-")) / cfg.name
        self._write_config()
        self.writer = SummaryWriter(self.dir / "logs")
        self.label = describe(self.spec)
        self.evaluator = self._make_evaluator() if cfg.eval_every else None

    # -------------------------------------------------------------- setup helpers
    def _make_evaluator(self):
        from tf3dgan.training.quality import Evaluator

        ref = self.val if self.val is not None else self.plan.held_back
        n = min(self.cfg.eval_count, len(ref))
        idx = np.sort(np.random.default_rng(self.cfg.seed + 2).choice(len(ref), n, replace=False))
        return Evaluator(self.dir, ref.grids(idx), ref.source, n, self.spec["latent_dim"], self.cfg.seed,
                         self.threshold)

    def _make_strategy(self):
        cfg = self.cfg
        if self.backend == "jax":
            from tf3dgan.training.backends.jax import make_distribution
            from tf3dgan.training.backends.jax import split_cpu as split_jax_cpu

            if not cfg.sync_bn:
                raise Tf3dganError("--no-sync-bn is a TensorFlow setting: under KERAS_BACKEND=jax a data-parallel "
                                   "step computes BatchNorm over the global batch (always synchronized)")
            if cfg.cpu_devices:
                split_jax_cpu(cfg.cpu_devices)
            return make_distribution(cfg.strategy)
        from tf3dgan.training.backends.tensorflow import make_strategy, split_cpu

        if cfg.cpu_devices:
            split_cpu(cfg.cpu_devices)
        return make_strategy(cfg.strategy)

    def _restore(self, path: Path) -> None:
        arrays, meta = runs.load_checkpoint(path)
        hist = {k[len("history/"):]: arrays.pop(k) for k in list(arrays) if k.startswith("history/")}
        self.trainer.load_state_arrays(arrays, source=str(path))
        self.history.update({k: np.asarray(v, np.float32) for k, v in hist.items() if k in self.history})
        self.epoch = int(meta["epoch"])
        pos = self.trainer.position
        where = f"epoch {self.epoch}" + (f", step {pos}" if 0 < pos < self.trainer.steps_per_epoch else "")
        print(f"resumed {self.dir} from {path.name} ({where})")

    def _write_config(self) -> None:
        settings = self.cfg.to_dict()
        saved = self.plan.saved
        if saved is not None:   # a resumed run: its own settings, with the changes the user asked for
            settings = dict(saved.get("settings") or {}, **{key: new for key, _, new in self.plan.changes})
            for key in set(self.cfg.to_dict()) - set(settings) - set(PER_INVOCATION):
                settings[key] = getattr(self.cfg, key)   # settings newer than the run's config.json
        data = {"source": self.data.source, "count": len(self.data), "dim": self.data.dim}
        if self.data.pooled_from:
            data.update(pooled_from=self.data.pooled_from, pool_min=self.data.pool_min)
        config = {"tf3dgan": __import__("tf3dgan").__version__, "settings": settings,
                  "model": self.spec, "precision": self.precision, "batch_size": self.batch,
                  "data": data,
                  "validation": None if self.val is None else {"source": self.val.source, "count": len(self.val)},
                  "steps_per_epoch": self.trainer.steps_per_epoch, "lr_schedule": self.schedule,
                  "loss": self.trainer.objective.name, "d_rule": self.trainer.d_rule, "backend": self.backend,
                  "replicas": self.replicas, "threshold": self.threshold}
        if saved is not None and _same_json(saved, config):
            return   # an exact resume leaves config.json as it was
        runs.write_config(self.dir, config)

    # -------------------------------------------------------------- the loop
    def train(self) -> Path:
        cfg, trainer = self.cfg, self.trainer
        steps = trainer.steps_per_epoch
        pooled = f" (pooled from {self.data.pooled_from}³)" if self.data.pooled_from else ""
        print(f"training {self.dir}: {len(self.data)} grids of {self.data.dim}³{pooled} from {self.data.source}, "
              f"{self.label}, batch {self.batch}, "
              f"{steps} steps/epoch, {self.precision}, loss {trainer.objective.name}, D rule {trainer.d_rule}"
              + (f", {self.replicas} replicas ({type(self.strategy).__name__}"
                 f"{', synchronized BatchNorm' if self.cfg.sync_bn else ''})" if self.strategy is not None else ""))
        with _StopRequest() as stop:
            while self.epoch < cfg.epochs:
                results, seconds = self._train_epoch(stop)
                self._append_history(results)
                if trainer.position >= steps:   # the epoch is complete
                    self.epoch += 1
                    self._epoch_outputs(results, seconds)
                if stop.signal is not None:
                    if trainer.position < steps:   # the steps of the unfinished epoch still go to TensorBoard
                        self._log_step_scalars(results)
                        self.writer.flush()
                    path = self._save(numbered=False)
                    where = f"epoch {self.epoch}" + (f", step {trainer.position}" if trainer.position < steps else "")
                    print(f"{stop.signal}: stopped after {where}; saved {path}; resume with: "
                          f"{resume_command(cfg.name, cfg.out)}")
                    return self.dir
        print(f"done: {_plural(cfg.epochs, 'epoch')}; run folder {self.dir}")
        return self.dir

    def _train_epoch(self, stop):
        trainer, steps = self.trainer, self.trainer.steps_per_epoch
        trainer.set_learning_rates(*lr_at(self.schedule, self.epoch))
        if trainer.position == 0 or trainer.position >= steps:
            trainer.start_epoch()
        done, results, last_refresh = trainer.position, [], 0.0
        bar = tqdm(total=steps, initial=done, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=None if self.cfg.progress else True, dynamic_ncols=True)   # None: off when not a TTY
        start = time.perf_counter()
        while done < steps and stop.signal is None:
            n = min(self.cfg.steps_per_call, steps - done)
            results.append(trainer.train_steps(n))
            done += n
            bar.update(n)
            if len(results) > 1 and time.perf_counter() - last_refresh > 0.5:
                last_refresh = time.perf_counter()   # show the previous call's numbers: no wait on this one
                bar.set_postfix_str(_postfix(results[-2]))
        merged = {k: np.concatenate([np.asarray(r[k]) for r in results]) for k in results[0]} if results else {}
        seconds = time.perf_counter() - start
        bar.close()
        bad = [k for k in ("d_loss", "g_loss") if k in merged and not np.isfinite(merged[k]).all()]
        if bad:
            first = int(np.argmin(np.isfinite(merged[bad[0]])))
            epochs = runs.saved_epochs(self.dir)
            last = f"ckpt-{epochs[-1]:06d}.npz" if epochs else "none yet"
            raise Tf3dganError(f"non-finite {bad[0]} at epoch {self.epoch + 1}, step {done - len(merged[bad[0]]) + first + 1}"
                               f"; stopped without saving (last good checkpoint: {last}); try lower learning rates")
        return merged, seconds

    def _append_history(self, results: dict) -> None:
        if not results:
            return
        n, steps = len(results["d_loss"]), self.trainer.steps_per_epoch
        first = self.trainer.position - n          # the steps of this call run first..position-1
        results = dict(results, epoch=(self.epoch + (first + np.arange(n)) / steps).astype(np.float32))
        for k in HISTORY_KEYS:
            self.history[k] = np.concatenate([self.history[k], results[k].astype(np.float32)])

    def _epoch_outputs(self, results: dict, seconds: float) -> None:
        cfg, e = self.cfg, self.epoch
        n = len(results["d_loss"])
        rate = n * self.batch / max(seconds, 1e-9)
        val = float(np.nanmean(results["val_loss"])) if self.val is not None else float("nan")
        g_lr, d_lr = self.trainer.learning_rates
        due = lambda every: e % every == 0 or e == cfg.epochs  # noqa: E731
        if self.evaluator is not None and due(cfg.eval_every):
            self._evaluate()
        line = (f"epoch {e}/{cfg.epochs}  d_loss {results['d_loss'].mean():.4f}  g_loss {results['g_loss'].mean():.4f}"
                + (f"  val_d_loss {val:.4f}" if self.val is not None else "")
                + f"  D trained {results['d_trained'].mean():.0%}  G/D ratio {int(results['ratio'][-1])}"
                + f"  {rate:.1f} samples/s  {seconds:.1f}s"
                + (self.evaluator.summary() if self.evaluator is not None else ""))
        tqdm.write(line)
        self._log_scalars(results, val, rate, g_lr, d_lr)
        grid = self.trainer.generate(self.sample_z[:1])[0] if due(cfg.sample) or due(cfg.graph3d) else None
        if due(cfg.sample):
            self._save_sample(grid)
        if due(cfg.graph):
            self._save_loss_graph()
        if due(cfg.graph3d):
            self._save_graph3d(grid)
        if due(cfg.save):
            self._save(numbered=True)
            runs.export_generator(self.dir, self.G)
        self.writer.flush()

    # -------------------------------------------------------------- outputs
    def _save_sample(self, grid: np.ndarray) -> None:
        with atomic_path(self.dir / f"{self.epoch}.npy") as tmp:
            np.save(tmp, grid.astype(np.float32))

    def _save_loss_graph(self) -> None:
        from tf3dgan.outputs import plots  # matplotlib and scipy load when the first graph is due, not before the checks

        h = self.history
        val = h["val_loss"] if self.val is not None else None
        g_lr, d_lr = self.trainer.learning_rates
        plots.save_loss_plot(self.dir / "plots" / f"{self.epoch}.png", h["d_loss"], h["g_loss"], h["epoch"], val,
                             title=f"{self.label} {self.trainer.objective.name} "
                                   f"[lrG={g_lr:.5f}, lrD={d_lr:.5f}]")
        names = {"d_loss": "track_d_loss", "g_loss": "track_g_loss", "val_loss": "track_d_validation_loss",
                 "epoch": "epochs", "d_trained": "track_d_trained", "ratio": "track_gd_ratio"}
        if self.val is None:   # no -v: no validation curve
            del names["val_loss"]
        for key, stem in names.items():
            with atomic_path(self.dir / "plots" / f"{stem}.npy") as tmp:
                np.save(tmp, h[key])

    def _save_graph3d(self, grid: np.ndarray) -> None:
        from tf3dgan.outputs import plots

        threshold = self.threshold
        title = f"{self.label} [Epoch={self.epoch}]"
        plots.save_voxel_graph(self.dir / "3D_graphs" / f"{self.epoch}.png", grid, title, threshold,
                               style=self.cfg.graph_style)
        step = len(self.history["d_loss"])   # TensorBoard: one step axis (global train steps) for everything
        self.writer.image("sample/graph", plots.voxel_graph_image(grid, title, threshold, style="shaded"), step)
        points = plots.surface_voxels(grid, threshold).astype(np.float32)
        height = points[:, 1] / max(grid.shape[1] - 1, 1)
        colors = np.stack([255 * height, 96 + 0 * height, 255 * (1 - height)], -1).astype(np.uint8)
        self.writer.points("sample/voxels", points, colors, step)

    def _log_step_scalars(self, results) -> None:
        """Per-step losses, at global step numbers (the history already holds these steps)."""
        n = len(results.get("d_loss", ()))
        series = {"loss/d": results["d_loss"], "loss/g": results["g_loss"]}
        if self.val is not None:
            series["loss/d_validation"] = results["val_loss"]
        self.writer.scalar_series(len(self.history["d_loss"]) - n + 1, series)

    def _log_scalars(self, results, val, rate, g_lr, d_lr) -> None:
        self._log_step_scalars(results)
        self.writer.scalars(len(self.history["d_loss"]), {
            "train/d_trained_fraction": results["d_trained"].mean(), "train/gd_train_ratio": results["ratio"][-1],
            "train/d_accuracy": results["d_accuracy"].mean(), "lr/g": g_lr, "lr/d": d_lr,
            "train/loss_scale": results["loss_scale"][-1], "perf/samples_per_s": rate, "train/epoch": self.epoch})

    def _evaluate(self) -> None:
        """Score the generator now (metrics.jsonl, quality/* scalars); keep checkpoints/best.npz for the best 1-NNA."""
        step = len(self.history["d_loss"])
        record, best = self.evaluator.evaluate(self.trainer.generate, self.epoch, step)
        self.writer.scalars(step, {f"quality/{k}": v for k, v in record.items()
                                   if k not in ("epoch", "step", "n_samples", "n_reference", "threshold")
                                   and isinstance(v, (int, float))})
        if best:
            self._save(numbered=False, name=runs.BEST)

    def _save(self, numbered: bool, name: str | None = None) -> Path:
        arrays = self.trainer.state_arrays()
        arrays.update({f"history/{k}": v for k, v in self.history.items()})
        meta = {"epoch": self.epoch, "step_in_epoch": self.trainer.position, "model": self.spec,
                "precision": self.precision, "loss": self.trainer.objective.name, "backend": self.backend,
                "time": time.time()}
        return runs.save_checkpoint(self.dir, arrays, meta, numbered=numbered, keep=self.cfg.keep, name=name)


def _postfix(metrics: dict) -> str:
    d, g = float(np.asarray(metrics["d_loss"])[-1]), float(np.asarray(metrics["g_loss"])[-1])
    train_d = bool(np.asarray(metrics["d_trained"])[-1])
    return f"d_loss={d:.4f} g_loss={g:.4f} TrainD={train_d} G/D={int(np.asarray(metrics['ratio'])[-1])}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _same_json(a: dict, b: dict) -> bool:
    """Equal once written as JSON (tuples and lists alike)."""
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def fit(cfg: TrainConfig, given: set[str] | None = None) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run folder.

    ``given``: the settings the user gave explicitly; on a resume (``cfg.load``) every other
    setting comes from the run's ``config.json`` (default: the fields that differ from
    :class:`TrainConfig`'s defaults). Everything that can be checked without Keras — settings,
    the run folder, the checkpoint, the data — is checked before TensorFlow is imported."""
    from tf3dgan.cli import import_tensorflow_quietly, keras_backend

    plan = prepare(cfg, given)
    try:
        for key, old, new in plan.changes:
            print(f"resuming with {describe_change(key, old, new)}")
        import_tensorflow_quietly(required=keras_backend() == "tensorflow")
        return _Run(plan).train()
    finally:
        if plan.lock is not None:
            plan.lock.release()

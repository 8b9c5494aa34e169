"""The training run: settings, data, models, the epoch loop, outputs, checkpoints, resume.

``fit(TrainConfig(...))`` is what ``tools/train.py`` calls.  Per epoch it runs
``steps_per_epoch`` compiled steps (``steps_per_call`` at a time), reads the per-step
metrics back once at the end of the epoch, and writes the run folder's outputs on the
original's schedule (``-sample``, ``-save``, ``-graph``, ``-graph3d`` epochs).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import plots, runs
from .atomic import atomic_path
from .errors import CheckpointError, Tf3dganError
from .summaries import SummaryWriter

HISTORY_KEYS = ("d_loss", "g_loss", "val_loss", "d_trained", "ratio", "d_accuracy", "loss_scale", "epoch")


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as ``config.json``)."""

    name: str = "Test"
    data: str = "ModelNet10/chair/train"
    validation_data: str = ""
    epochs: int = 2500
    batchsize: int = 24
    sample: int = 10
    save: int = 10
    graph: int = 10
    graph3d: int = 10
    graph_style: str = "scatter"
    load: bool = False
    load_epoch: int | None = None
    glr: float = 0.002
    dlr: float = 0.00005
    arch: str | None = None              # None: rasgan64 for a new run, the saved one for a resumed run
    loss: str = "rasgan"
    d_rule: str | None = None
    precision: str | None = None
    lr_schedule: str | None = None
    seed: int = 0
    width: float | None = None           # None: 1.0 for a new run, the saved one for a resumed run
    resolution: int | None = None
    output_activation: str | None = None
    xla: bool = False
    strategy: str = "auto"
    sync_bn: bool = True
    cpu_devices: int = 0
    conv_transpose: str = "native"
    steps_per_call: int = 1
    out: str = "savepoint"
    keep: int = 10
    deterministic: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- learning-rate schedule
def parse_lr_schedule(spec: str | None, glr: float, dlr: float) -> list[tuple[int, float, float]]:
    """``"0:0.002/0.00005,300:0.005/0.00005"`` (epoch:G/D, ...) or a JSON file holding
    ``{"0": [0.002, 0.00005], "300": {"g": 0.005, "d": 0.00005}}``.  Epochs before the first
    entry use ``-glr``/``-dlr``.  Returns sorted ``(start_epoch, g_lr, d_lr)`` entries."""
    entries = [(0, float(glr), float(dlr))]
    if not spec:
        return entries
    try:
        if os.path.isfile(spec):
            with open(spec, encoding="utf-8") as f:
                raw = json.load(f)
            items = raw.items() if isinstance(raw, dict) else [(r["epoch"], r) for r in raw]
            for epoch, value in items:
                g, d = (value["g"], value["d"]) if isinstance(value, dict) else value
                entries.append((int(epoch), float(g), float(d)))
        else:
            for part in filter(None, (p.strip() for p in spec.split(","))):
                epoch, rates = part.split(":")
                g, d = rates.split("/")
                entries.append((int(epoch), float(g), float(d)))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise Tf3dganError(f"--lr-schedule {spec!r}: expected 'EPOCH:GLR/DLR,...' or a JSON file of "
                           f"{{\"EPOCH\": [GLR, DLR]}} ({type(e).__name__}: {e})") from None
    if any(e < 0 or g <= 0 or d <= 0 for e, g, d in entries):
        raise Tf3dganError(f"--lr-schedule {spec!r}: epochs must be >= 0 and rates > 0")
    by_epoch = {e: (g, d) for e, g, d in entries}   # a later entry for epoch 0 replaces -glr/-dlr
    return sorted((e, g, d) for e, (g, d) in by_epoch.items())


def lr_at(schedule, epoch: int) -> tuple[float, float]:
    g, d = schedule[0][1:]
    for start, g_lr, d_lr in schedule:
        if start <= epoch:
            g, d = g_lr, d_lr
    return g, d


# ---------------------------------------------------------------------- resuming
_MODEL_FLAGS = {"arch": "--arch", "width": "--width", "resolution": "--resolution",
                "output_activation": "--output-activation"}


def _new_model_flags(cfg: TrainConfig) -> tuple[str, float]:
    """``(arch, width)`` of a new run: the flags, or their defaults where not given."""
    return cfg.arch or "rasgan64", 1.0 if cfg.width is None else cfg.width


def _keep_saved_model(cfg: TrainConfig, model: dict, run_dir) -> None:
    """A resumed run keeps the model it was made with: a model flag given (not ``None``) with
    another value than the saved one is an error, rather than silently ignored."""
    for key, flag in _MODEL_FLAGS.items():
        given, kept = getattr(cfg, key), model.get(key)
        if given is not None and given != kept:
            raise Tf3dganError(f"{flag} {given} does not match the run being resumed ({run_dir}: {key} {kept}); "
                               f"a resumed run keeps its model: drop {flag} or start a new run with another -n")


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
    """State and outputs of one training run (the body of ``fit``)."""

    def __init__(self, cfg: TrainConfig):
        import keras

        from . import data as data_lib
        from .models import build_models, make_spec

        backend = keras.backend.backend()
        if backend == "tensorflow":
            from .training import GANTrainer as Trainer, default_precision, tune_for_device
        elif backend == "jax":
            from .jax_training import JaxGANTrainer as Trainer, default_precision, tune_for_device
        else:
            raise Tf3dganError(f"the trainer runs on Keras' TensorFlow or JAX backend, but KERAS_BACKEND is "
                               f"{backend!r}; set KERAS_BACKEND=tensorflow (default) or jax")
        self.cfg, self.backend = cfg, backend
        if cfg.load_epoch is not None:
            cfg.load = True
        if cfg.cpu_devices < 0:
            raise Tf3dganError(f"--cpu-devices must be >= 0 (0: no split), got {cfg.cpu_devices}")
        if cfg.keep < 0:
            raise Tf3dganError(f"--keep must be >= 0 (0: keep all), got {cfg.keep}")
        if not cfg.load:   # the model flags, checked before any data is read (a resumed run has its own)
            try:
                make_spec(*_new_model_flags(cfg), cfg.resolution, cfg.output_activation)
            except ValueError as e:
                raise Tf3dganError(f"model settings: {e}") from None
        self.dir = runs.run_path(cfg.out, cfg.name)
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

        checkpoint = self._find_checkpoint()
        saved = runs.read_config(self.dir) if cfg.load else None
        model_cfg = saved["model"] if saved else None
        if model_cfg is not None:
            _keep_saved_model(cfg, model_cfg, self.dir)

        want_res = model_cfg["resolution"] if model_cfg else cfg.resolution
        self.data = data_lib.load_dataset(cfg.data, resolution=want_res, seed=cfg.seed)
        self.val = (data_lib.load_dataset(cfg.validation_data, resolution=self.data.dim, seed=cfg.seed + 1)
                    if cfg.validation_data else None)
        if model_cfg is None:
            model_cfg = make_spec(*_new_model_flags(cfg), self.data.dim, cfg.output_activation).to_dict()
        self.spec = model_cfg
        for key in _MODEL_FLAGS:   # config.json's settings name the model trained
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
        self.schedule = parse_lr_schedule(cfg.lr_schedule, cfg.glr, cfg.dlr)

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
        if checkpoint is not None:
            self._restore(checkpoint)
        if self.worker != 0:   # multi-worker: only the chief (worker 0) writes the run folder
            import tempfile

            self.dir = Path(tempfile.mkdtemp(prefix=f"tf3dgan-worker{self.worker}-")) / cfg.name
        self._write_config()
        self.writer = SummaryWriter(self.dir / "logs")

    # -------------------------------------------------------------- setup helpers
    def _make_strategy(self):
        cfg = self.cfg
        if self.backend == "jax":
            from .jax_training import make_distribution, split_cpu as split_jax_cpu

            if not cfg.sync_bn:
                raise Tf3dganError("--no-sync-bn is a TensorFlow setting: under KERAS_BACKEND=jax a data-parallel "
                                   "step computes BatchNorm over the global batch (always synchronized)")
            if cfg.cpu_devices:
                split_jax_cpu(cfg.cpu_devices)
            return make_distribution(cfg.strategy)
        from .training import make_strategy, split_cpu

        if cfg.cpu_devices:
            split_cpu(cfg.cpu_devices)
        return make_strategy(cfg.strategy)

    def _find_checkpoint(self) -> Path | None:
        cfg = self.cfg
        existing = runs.saved_epochs(self.dir) or runs.checkpoint_path(self.dir).exists()
        if not cfg.load:
            if existing:
                raise Tf3dganError(f"{self.dir} already holds a run with checkpoints; resume it with -l "
                                   f"(or -l -le EPOCH), or choose another -n name")
            return None
        if not self.dir.is_dir():
            raise CheckpointError(f"{self.dir}: no such run to resume (-l); check -n and --out")
        path = runs.checkpoint_path(self.dir, cfg.load_epoch)
        if not path.exists():
            epochs = runs.saved_epochs(self.dir)
            have = ", ".join(map(str, epochs)) if epochs else "none"
            raise CheckpointError(f"{path}: no such checkpoint (saved epochs: {have})")
        return path

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
        config = {"tf3dgan": __import__("tf3dgan").__version__, "settings": self.cfg.to_dict(),
                  "model": self.spec, "precision": self.precision, "batch_size": self.batch,
                  "data": {"source": self.data.source, "count": len(self.data), "dim": self.data.dim},
                  "validation": None if self.val is None else {"source": self.val.source, "count": len(self.val)},
                  "steps_per_epoch": self.trainer.steps_per_epoch, "lr_schedule": self.schedule,
                  "loss": self.trainer.objective.name, "d_rule": self.trainer.d_rule, "backend": self.backend,
                  "replicas": self.replicas}
        runs.write_config(self.dir, config)

    # -------------------------------------------------------------- the loop
    def train(self) -> Path:
        cfg, trainer = self.cfg, self.trainer
        steps = trainer.steps_per_epoch
        print(f"training {self.dir}: {len(self.data)} grids of {self.data.dim}³ from {self.data.source}, "
              f"{self.spec['arch']} width {self.spec['width']}, batch {self.batch}, "
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
                    print(f"{stop.signal}: stopped after {where}; saved {path} "
                          f"(resume with: -n {cfg.name} -l)")
                    return self.dir
        print(f"done: {cfg.epochs} epochs; run folder {self.dir}")
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
        line = (f"epoch {e}/{cfg.epochs}  d_loss {results['d_loss'].mean():.4f}  g_loss {results['g_loss'].mean():.4f}"
                + (f"  val_d_loss {val:.4f}" if self.val is not None else "")
                + f"  D trained {results['d_trained'].mean():.0%}  G/D ratio {int(results['ratio'][-1])}"
                + f"  {rate:.1f} samples/s  {seconds:.1f}s")
        tqdm.write(line)
        self._log_scalars(results, val, rate, g_lr, d_lr)
        due = lambda every: e % every == 0 or e == cfg.epochs  # noqa: E731
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
        h = self.history
        val = h["val_loss"] if self.val is not None else None
        g_lr, d_lr = self.trainer.learning_rates
        plots.save_loss_plot(self.dir / "plots" / f"{self.epoch}.png", h["d_loss"], h["g_loss"], h["epoch"], val,
                             title=f"{self.spec['arch']} {self.trainer.objective.name} "
                                   f"[lrG={g_lr:.5f}, lrD={d_lr:.5f}]")
        names = {"d_loss": "track_d_loss", "g_loss": "track_g_loss", "val_loss": "track_d_validation_loss",
                 "epoch": "epochs", "d_trained": "track_d_trained", "ratio": "track_gd_ratio"}
        for key, stem in names.items():
            with atomic_path(self.dir / "plots" / f"{stem}.npy") as tmp:
                np.save(tmp, h[key])

    def _save_graph3d(self, grid: np.ndarray) -> None:
        threshold = 0.5 if self.spec["output_activation"] == "sigmoid" else 0.3
        title = f"{self.spec['arch']} [Epoch={self.epoch}]"
        plots.save_voxel_graph(self.dir / "3D_graphs" / f"{self.epoch}.png", grid, title, threshold,
                               style=self.cfg.graph_style)
        self.writer.image("sample/graph", plots.voxel_graph_image(grid, title, threshold, style="shaded"), self.epoch)
        points = plots.surface_voxels(grid, threshold).astype(np.float32)
        height = points[:, 1] / max(grid.shape[1] - 1, 1)
        colors = np.stack([255 * height, 96 + 0 * height, 255 * (1 - height)], -1).astype(np.uint8)
        self.writer.points("sample/voxels", points, colors, self.epoch)

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

    def _save(self, numbered: bool) -> Path:
        arrays = self.trainer.state_arrays()
        arrays.update({f"history/{k}": v for k, v in self.history.items()})
        meta = {"epoch": self.epoch, "step_in_epoch": self.trainer.position, "model": self.spec,
                "precision": self.precision, "loss": self.trainer.objective.name, "backend": self.backend,
                "time": time.time()}
        return runs.save_checkpoint(self.dir, arrays, meta, numbered=numbered, keep=self.cfg.keep)


def _postfix(metrics: dict) -> str:
    d, g = float(np.asarray(metrics["d_loss"])[-1]), float(np.asarray(metrics["g_loss"])[-1])
    train_d = bool(np.asarray(metrics["d_trained"])[-1])
    return f"d_loss={d:.4f} g_loss={g:.4f} TrainD={train_d} G/D={int(np.asarray(metrics['ratio'])[-1])}"


def fit(cfg: TrainConfig) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run folder."""
    for field in ("epochs", "batchsize", "sample", "save", "graph", "graph3d", "steps_per_call"):
        if getattr(cfg, field) < 1:
            raise Tf3dganError(f"--{field.replace('_', '-')} must be at least 1, got {getattr(cfg, field)}")
    return _Run(cfg).train()

"""The training run: ``fit`` and its epoch loop.

``fit(TrainConfig(...))`` is what ``tools/train.py`` calls: :func:`~tf3dgan.training.plan.prepare`
settles the run before TensorFlow loads (settings, folder, checkpoint, data), :func:`~tf3dgan.training.build.build`
makes the backend's strategy, models and trainer (and restores a resumed run),
:class:`~tf3dgan.training.outputs.RunOutputs` writes the run folder, and :func:`train` is the loop.  Per epoch it runs
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

from tf3dgan.errors import Tf3dganError
from tf3dgan.training.build import HISTORY_KEYS, Run, build
from tf3dgan.training.outputs import RunOutputs
from tf3dgan.training.plan import (  # noqa: F401  (the names the flat layout's fit module had)
    MODEL_FLAGS,
    PER_INVOCATION,
    RunPlan,
    TrainConfig,
    describe_change,
    lr_at,
    parse_lr_schedule,
    prepare,
    resume_command,
    schedule_restarts,
)


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


# ---------------------------------------------------------------------- the loop
def train(run: Run, outputs: RunOutputs) -> Path:
    """Train ``run`` until ``-e`` epochs are done (or a signal stops it, saved); returns the run folder."""
    cfg, trainer = run.cfg, run.trainer
    steps = trainer.steps_per_epoch
    data = run.data
    pooled = f" (pooled from {data.pooled_from}³)" if data.pooled_from else ""
    print(f"training {outputs.dir}: {len(data)} grids of {data.dim}³{pooled} from {data.source}, "
          f"{run.label}, batch {run.batch}, "
          f"{steps} steps/epoch, {run.precision}, loss {trainer.objective.name}, D rule {trainer.d_rule}"
          + "".join(f", {what}" for what in _stabilisers(run))
          + (f", {run.replicas} replicas ({type(run.strategy).__name__}"
             f"{', synchronized BatchNorm' if cfg.sync_bn else ''})" if run.strategy is not None else ""))
    with _StopRequest() as stop:
        while run.epoch < cfg.epochs:
            results, seconds = _train_epoch(run, outputs, stop)
            _append_history(run, results)
            if trainer.position >= steps:   # the epoch is complete
                run.epoch += 1
                outputs.end_of_epoch(results, seconds)
            if stop.signal is not None:
                if trainer.position < steps:   # the steps of the unfinished epoch still go to TensorBoard
                    outputs.log_step_scalars(results)
                    outputs.flush()
                path = outputs.save(numbered=False)
                where = f"epoch {run.epoch}" + (f", step {trainer.position}" if trainer.position < steps else "")
                print(f"{stop.signal}: stopped after {where}; saved {path}; resume with: "
                      f"{resume_command(cfg.name, cfg.out)}")
                return outputs.dir
    print(f"done: {_plural(cfg.epochs, 'epoch')}; run folder {outputs.dir}")
    return outputs.dir


def _stabilisers(run: Run) -> list[str]:
    """The start line's words for the stabilisers a run uses (none for the seeds' recipes)."""
    s, mbstd = run.trainer.settings, run.plan.model.get("mbstd", 0)
    return ([f"R1 γ {s.r1_gamma:g}"] if s.r1_gamma else []) + ([f"G EMA β {s.g_ema:g}"] if s.g_ema else []) \
        + ([f"augment {'+'.join(s.augment)}"] if s.augment else []) + ([f"minibatch std {mbstd}"] if mbstd else [])


def _train_epoch(run: Run, outputs: RunOutputs, stop):
    """The rest of the current epoch (``--steps-per-call`` steps a call, until a signal); its metrics, merged."""
    trainer, steps, cfg = run.trainer, run.trainer.steps_per_epoch, run.cfg
    trainer.set_learning_rates(*lr_at(run.plan.schedule, run.epoch))
    if trainer.position == 0 or trainer.position >= steps:
        if cfg.lr_schedule_reset and run.epoch in schedule_restarts(run.plan.schedule):
            trainer.restart_state()   # as the seed's restart with the table's next rates
        trainer.start_epoch()
    done, results, last_refresh = trainer.position, [], 0.0
    bar = tqdm(total=steps, initial=done, desc=f"epoch {run.epoch + 1}/{cfg.epochs}", leave=False,
               disable=None if cfg.progress else True, dynamic_ncols=True)   # None: off when not a TTY
    start = time.perf_counter()
    while done < steps and stop.signal is None:
        n = min(cfg.steps_per_call, steps - done)
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
        raise Tf3dganError(f"non-finite {bad[0]} at epoch {run.epoch + 1}, step {done - len(merged[bad[0]]) + first + 1}"
                           f"; stopped without saving (last good checkpoint: {outputs.last_checkpoint()}); "
                           "try lower learning rates")
    return merged, seconds


def _append_history(run: Run, results: dict) -> None:
    if not results:
        return
    n, steps = len(results["d_loss"]), run.trainer.steps_per_epoch
    first = run.trainer.position - n          # the steps of this call run first..position-1
    results = dict(results, epoch=(run.epoch + (first + np.arange(n)) / steps).astype(np.float32))
    for k in HISTORY_KEYS:
        run.history[k] = np.concatenate([run.history[k], results[k].astype(np.float32)])


def _postfix(metrics: dict) -> str:
    d, g = float(np.asarray(metrics["d_loss"])[-1]), float(np.asarray(metrics["g_loss"])[-1])
    train_d = bool(np.asarray(metrics["d_trained"])[-1])
    return f"d_loss={d:.4f} g_loss={g:.4f} TrainD={train_d} G/D={int(np.asarray(metrics['ratio'])[-1])}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def fit(cfg: TrainConfig, given: set[str] | None = None) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run folder.

    ``given``: the settings the user gave explicitly; on a resume (``cfg.load``) every other
    setting comes from the run's ``config.json`` (default: the fields that differ from
    :class:`TrainConfig`'s defaults). Everything that can be checked without Keras — settings,
    the run folder, the checkpoint, the data — is checked before TensorFlow is imported."""
    from tf3dgan.cli import import_tensorflow_quietly, keras_backend
    from tf3dgan.training.backends import uses_tensorflow

    plan = prepare(cfg, given)
    try:
        for key, old, new in plan.changes:
            print(f"resuming with {describe_change(key, old, new)}")
        import_tensorflow_quietly(required=uses_tensorflow(keras_backend()))
        run = build(plan)
        return train(run, RunOutputs(run))
    finally:
        if plan.lock is not None:
            plan.lock.release()

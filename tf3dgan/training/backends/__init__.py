"""Backend adapters of the one step algorithm: TensorFlow (:mod:`.tensorflow`) and JAX (:mod:`.jax`), and the
registry that is the one place the training run, the benchmark and the tools choose between them.

``get_backend()`` names the :class:`Backend` of Keras' current backend (``get_backend("jax")`` a given one).
A ``Backend`` says, for its Keras backend, which trainer class trains, its default precision and device
tuning, how ``--strategy``/``--cpu-devices`` become a multi-device strategy and how many replicas that has,
how the models are built for it (TensorFlow: inside ``strategy.scope()`` with synchronized BatchNorm; JAX:
plain models, the trainer shards its step), and which TensorFlow-only switches (``--deterministic``,
``--no-sync-bn``, ``--xla`` with a strategy) it applies, refuses or leaves off.

Importing this module imports neither TensorFlow, JAX nor Keras: an adapter module is imported the first
time one of its members is used, so flag checks and error paths stay fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar

from tf3dgan.choices import BACKENDS, JAX_STRATEGIES, STRATEGIES
from tf3dgan.errors import Tf3dganError

__all__ = ["Backend", "NAMES", "get_backend", "uses_tensorflow"]


@dataclass(frozen=True)
class Backend:
    """One Keras backend's adapter (its module is imported on first use)."""

    name: str              # Keras' name of the backend: "tensorflow", "jax"
    module: str            # the adapter module
    trainer_name: str      # its trainer class
    strategies: tuple      # the --strategy choices it implements
    uses_tensorflow: bool  # it trains with TensorFlow (else TensorFlow, where installed, only writes TensorBoard logs)
    #: TensorFlow-only switches a resumed run's config.json may carry: (setting, flag, value that means off).
    #: A backend that lacks them says so and leaves them off (unless given again on the command line).
    foreign_switches: ClassVar[tuple] = ()
    strategy_keyword: ClassVar[str] = "strategy"   # the trainer's keyword argument for the multi-device strategy

    @property
    def short(self) -> str:
        """The short name of ``tools/bench.py --backend`` and of benchmark results: ``tf``, ``jax``."""
        return BACKENDS[self.name]

    def adapter(self):
        """The adapter module (imported now if it is not yet)."""
        return importlib.import_module(self.module)

    @property
    def Trainer(self):
        return getattr(self.adapter(), self.trainer_name)

    def default_precision(self) -> str:
        return self.adapter().default_precision()

    def tune_for_device(self) -> None:
        self.adapter().tune_for_device()

    def split_cpu(self, n: int) -> None:
        self.adapter().split_cpu(n)

    # ------------------------------------------------------------------ a run's switches and devices
    def leave_off_foreign(self, cfg, saved: dict | None, given, report=print) -> None:
        """On a resumed run, turn off the switches of :attr:`foreign_switches` that ``cfg`` took from the
        run's config.json (not given on this command line), saying so once each."""
        if saved is None:
            return
        for key, flag, off in self.foreign_switches:
            if getattr(cfg, key) != off and key not in given:
                report(f"note: the run was started with {flag}, a TensorFlow setting; not used under JAX")
                setattr(cfg, key, off)

    def make_strategy(self, cfg):
        """The multi-device strategy of ``cfg.strategy`` (after splitting the CPU into ``cfg.cpu_devices``
        devices), or None for one device."""
        raise NotImplementedError

    def check_strategy(self, cfg, strategy) -> None:
        """Refuse settings that do not go with ``strategy``."""

    def worker(self, strategy) -> int:
        """This process's worker number in a multi-worker strategy (0: the chief, or a one-machine run)."""
        resolver = getattr(strategy, "cluster_resolver", None)
        return 0 if resolver is None else int(resolver.task_id or 0)

    def replicas(self, strategy) -> int:
        """The number of replicas the global batch is split over (1 without a strategy)."""
        raise NotImplementedError

    def determinism(self, cfg) -> None:
        """Apply ``--deterministic`` (or refuse it)."""
        raise NotImplementedError

    def build_models(self, strategy, cfg, **spec):
        """``(G, D)`` from ``models.networks.build_models(**spec)``, built as ``strategy`` needs them."""
        from tf3dgan.models.networks import build_models

        return build_models(**spec)

    def trainer_options(self, strategy) -> dict:
        """The trainer's keyword arguments for ``strategy`` (none for one device)."""
        return {} if strategy is None else {self.strategy_keyword: strategy}


@dataclass(frozen=True)
class _TensorFlow(Backend):
    """``tf.function`` step; ``tf.distribute`` strategies (models built in their scope)."""

    def make_strategy(self, cfg):
        adapter = self.adapter()
        if cfg.cpu_devices:
            adapter.split_cpu(cfg.cpu_devices)
        return adapter.make_strategy(cfg.strategy)

    def check_strategy(self, cfg, strategy) -> None:
        if strategy is not None and cfg.xla:
            raise Tf3dganError("--xla does not go with a multi-device --strategy (use --strategy one with --xla)")

    def replicas(self, strategy) -> int:
        return 1 if strategy is None else int(strategy.num_replicas_in_sync)

    def determinism(self, cfg) -> None:
        if cfg.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()

    def build_models(self, strategy, cfg, **spec):
        if strategy is None:
            return super().build_models(strategy, cfg, **spec)
        from tf3dgan.models.networks import build_models

        with strategy.scope():
            return build_models(**spec, synchronized_bn=cfg.sync_bn)


@dataclass(frozen=True)
class _Jax(Backend):
    """``jit``/``scan`` step; ``keras.distribution.DataParallel`` (plain models, the trainer shards the step)."""

    foreign_switches: ClassVar[tuple] = (("deterministic", "--deterministic", False),
                                         ("sync_bn", "--no-sync-bn", True))
    strategy_keyword: ClassVar[str] = "distribution"

    def make_strategy(self, cfg):
        if not cfg.sync_bn:
            raise Tf3dganError("--no-sync-bn is a TensorFlow setting: under KERAS_BACKEND=jax a data-parallel "
                               "step computes BatchNorm over the global batch (always synchronized)")
        adapter = self.adapter()
        if cfg.cpu_devices:
            adapter.split_cpu(cfg.cpu_devices)
        return adapter.make_distribution(cfg.strategy)

    def replicas(self, strategy) -> int:
        return 1 if strategy is None else int(strategy.device_mesh.devices.size)

    def determinism(self, cfg) -> None:
        if cfg.deterministic:
            raise Tf3dganError("--deterministic is a TensorFlow setting; under JAX use XLA_FLAGS="
                               "--xla_gpu_deterministic_ops=true on GPU (CPU runs are deterministic)")


_REGISTRY = {
    "tensorflow": _TensorFlow("tensorflow", "tf3dgan.training.backends.tensorflow", "GANTrainer", STRATEGIES, True),
    "jax": _Jax("jax", "tf3dgan.training.backends.jax", "JaxGANTrainer", JAX_STRATEGIES, False),
}
#: The Keras backends the trainer runs on.
NAMES = tuple(_REGISTRY)


def get_backend(name: str | None = None) -> Backend:
    """The :class:`Backend` named ``name`` (None: Keras' current backend, which imports Keras)."""
    if name is None:
        import keras

        name = keras.backend.backend()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise Tf3dganError(f"the trainer runs on Keras' TensorFlow or JAX backend, but KERAS_BACKEND is "
                           f"{name!r}; set KERAS_BACKEND=tensorflow (default) or jax") from None


def uses_tensorflow(name: str) -> bool:
    """Whether the Keras backend ``name`` trains with TensorFlow (so TensorFlow must import); no import here."""
    backend = _REGISTRY.get(name)
    return backend is not None and backend.uses_tensorflow

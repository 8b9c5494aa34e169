"""The backend registry: one dispatch point for fit, the benchmark and the tools, importable without TensorFlow."""
from __future__ import annotations

import importlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
from _cli import REPO, tool_env

from tf3dgan import choices
from tf3dgan.errors import Tf3dganError
from tf3dgan.training.backends import NAMES, get_backend, uses_tensorflow


def test_the_registry_names_the_keras_backends_the_trainer_runs_on():
    assert NAMES == ("tensorflow", "jax") and set(NAMES) == set(choices.BACKENDS)
    tf, jax = get_backend("tensorflow"), get_backend("jax")
    assert (tf.name, tf.short, tf.trainer_name, tf.strategies) == ("tensorflow", "tf", "GANTrainer", choices.STRATEGIES)
    assert (jax.name, jax.short, jax.trainer_name, jax.strategies) == ("jax", "jax", "JaxGANTrainer",
                                                                       choices.JAX_STRATEGIES)
    assert uses_tensorflow("tensorflow") and not uses_tensorflow("jax") and not uses_tensorflow("torch")
    with pytest.raises(Tf3dganError, match=r"the trainer runs on Keras' TensorFlow or JAX backend, but KERAS_BACKEND "
                                           r"is 'torch'; set KERAS_BACKEND=tensorflow \(default\) or jax"):
        get_backend("torch")


def test_importing_the_registry_loads_no_tensorflow_jax_or_keras():
    code = ("import sys; from tf3dgan.training.backends import get_backend, NAMES; "
            "[get_backend(n).strategies for n in NAMES]; "
            "import tf3dgan.training.plan, tf3dgan.training.build, tf3dgan.training.outputs, tf3dgan.training.loop; "
            "print(sorted(m for m in ('tensorflow', 'jax', 'keras') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=tool_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def _cfg(**kw):
    base = dict(deterministic=False, sync_bn=True, xla=False, strategy="one", cpu_devices=0)
    return SimpleNamespace(**dict(base, **kw))


def test_tensorflow_only_switches_are_refused_or_left_off_under_jax():
    jax, tf = get_backend("jax"), get_backend("tensorflow")
    with pytest.raises(Tf3dganError, match="--deterministic is a TensorFlow setting; under JAX use XLA_FLAGS"):
        jax.determinism(_cfg(deterministic=True))
    with pytest.raises(Tf3dganError, match="--no-sync-bn is a TensorFlow setting"):
        jax.make_strategy(_cfg(sync_bn=False))   # refused before JAX is asked for devices
    with pytest.raises(Tf3dganError, match="--xla does not go with a multi-device --strategy"):
        tf.check_strategy(_cfg(xla=True), object())
    tf.check_strategy(_cfg(xla=True), None)

    notes = []   # a resumed TensorFlow run's switches: said once each and turned off, unless given again
    cfg = _cfg(deterministic=True, sync_bn=False)
    jax.leave_off_foreign(cfg, {"settings": {}}, given=set(), report=notes.append)
    assert (cfg.deterministic, cfg.sync_bn) == (False, True)
    assert notes == ["note: the run was started with --deterministic, a TensorFlow setting; not used under JAX",
                     "note: the run was started with --no-sync-bn, a TensorFlow setting; not used under JAX"]
    cfg = _cfg(deterministic=True)
    jax.leave_off_foreign(cfg, {"settings": {}}, given={"deterministic"}, report=notes.append)
    jax.leave_off_foreign(cfg, None, given=set(), report=notes.append)   # a new run: nothing inherited
    tf.leave_off_foreign(cfg, {"settings": {}}, given=set(), report=notes.append)
    assert cfg.deterministic and len(notes) == 2


def test_replicas_and_trainer_options_per_backend():
    tf, jax = get_backend("tensorflow"), get_backend("jax")
    assert tf.replicas(None) == jax.replicas(None) == 1
    assert tf.replicas(SimpleNamespace(num_replicas_in_sync=4)) == 4
    assert jax.replicas(SimpleNamespace(device_mesh=SimpleNamespace(devices=SimpleNamespace(size=2)))) == 2
    s = object()
    assert tf.trainer_options(s) == {"strategy": s} and jax.trainer_options(s) == {"distribution": s}
    assert tf.trainer_options(None) == jax.trainer_options(None) == {}
    assert tf.worker(None) == 0 and tf.worker(SimpleNamespace(cluster_resolver=SimpleNamespace(task_id=3))) == 3


@pytest.mark.parametrize("name", NAMES)
def test_each_backend_resolves_to_its_adapter(name):
    if name == "jax":
        pytest.importorskip("jax")
    backend = get_backend(name)
    module = importlib.import_module(backend.module)
    assert backend.Trainer is getattr(module, backend.trainer_name)
    assert tuple(module.STRATEGIES) == backend.strategies
    for member in ("default_precision", "tune_for_device", "split_cpu"):
        assert callable(getattr(module, member)), member
    assert callable(getattr(backend.Trainer, "sync_models", None))

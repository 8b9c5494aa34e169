"""JAX-backend half of tests/test_backend_jax.py, run as ``KERAS_BACKEND=jax python tests/_jax_worker.py``.

Usage: ``_jax_worker.py OUT_DIR IN_DIR CACHE_DIR SCENARIO...``.  Each scenario writes ``OUT_DIR/<name>.npz``
(its arrays) or, if it raises, ``OUT_DIR/<name>.error`` (the traceback); the test process
asserts on them.  ``IN_DIR`` holds what the TensorFlow side prepared (``tf_run/`` with a
checkpoint, ``latents.npz``); ``CACHE_DIR`` is JAX's persistent compilation cache (the
trainers of one configuration share their programs; the test keeps it between runs).

TensorFlow is made unimportable here (as on the GPU machines this backend is for): any
``import tensorflow`` raises ImportError.  Every worker writes ``OUT_DIR/worker-<first
scenario>.txt`` to say it ran that way.  JAX's CPU is split into 2 devices (``data_parallel`` uses
both; every other trainer runs on the first).
"""
from __future__ import annotations

import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":
    sys.modules["tensorflow"] = None   # "import tensorflow" now raises ImportError

import jax
import keras

from tf3dgan.data.datasets import pack
from tf3dgan.data.datasets import unpack as unpack_grids
from tf3dgan.data.synthetic import make_shapes
from tf3dgan.errors import CheckpointError
from tf3dgan.models.networks import build_models
from tf3dgan.training import checkpoint_keys, runs
from tf3dgan.training.backends.jax import JaxGANTrainer, cpu_friendly_convolutions, make_distribution

# the configuration of tests/test_training.py's tiny_trainer: rasgan64 at 8³, width 1/8, 32 boxes
DATA = {8: pack(make_shapes("boxes", 32, 8, seed=1)), 16: pack(make_shapes("boxes", 32, 16, seed=1))}


def tiny(loss="rasgan", d_rule=None, precision="float32", seed=3, res=8, **kw):
    keras.utils.set_random_seed(seed)   # the same initial weights for the same seed
    g, d = build_models("rasgan64", width=0.125, resolution=res, output_activation="sigmoid", dtype_policy=precision)
    return JaxGANTrainer(g, d, DATA[res], res, batch_size=8, loss=loss, d_rule=d_rule, seed=seed, precision=precision,
                         **kw)


def trainable_keys(trainer, prefix):
    """Checkpoint keys (``g/...`` / ``d/...``) of the model's trainable weights."""
    model = trainer.G if prefix == "g" else trainer.D
    ids = {id(v) for v in model.trainable_variables}
    return [key for key, w, _ in checkpoint_keys.model_keys(model, prefix) if id(w) in ids]


def same(a: dict, b: dict, keys) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in keys)


def steps(trainer, n, per_call=None):
    """``n`` steps, starting epochs as needed; returns the concatenated metrics as NumPy arrays."""
    out = []
    while n > 0:
        if trainer.position >= trainer.steps_per_epoch:
            trainer.start_epoch()
        k = min(per_call or n, n, trainer.steps_per_epoch - trainer.position)
        out.append(trainer.train_steps(k))
        n -= k
    return {key: np.concatenate([np.asarray(m[key]) for m in out]) for key in out[0]}


def fixed_latents(trainer, latents):
    """Replace the trainer's latent draws by constants: the D step gets latents[0], the G step latents[1]."""
    calls = []

    def latent(key):
        calls.append(None)
        return jax.numpy.asarray(latents[(len(calls) - 1) % 2])

    trainer._latent = latent


# ---------------------------------------------------------------------------------- scenarios
def compile_once(inp, out):
    t = tiny()
    t.start_epoch()
    types = []
    with jax.transfer_guard_device_to_host("disallow"):   # a host read inside train_steps would raise
        for i in range(6):
            if t.position + 2 > t.steps_per_epoch:
                t.start_epoch()
            t.set_learning_rates(0.001 * (i + 1), 0.0001 * (i + 1))
            m = t.train_steps(2)
            types.append(all(isinstance(v, jax.Array) and v.shape == (2,) for v in m.values()))
    finite = all(np.isfinite(np.asarray(v)).all() for k, v in m.items() if k != "val_loss")
    errors = []
    for bad in ({"g/blocks.0.dense/kernel": np.zeros((3, 3), np.float32)}, {"trainer/rng": np.zeros(2, np.int64)}):
        try:
            t.load_state_arrays(dict(t.state_arrays(), **bad), source="bad.npz")
        except CheckpointError as e:
            errors.append(str(e))
    missing = t.state_arrays()
    del missing["opt_d/blocks.0.conv3d/kernel/velocity"]
    try:
        t.load_state_arrays(missing, source="bad.npz")
    except CheckpointError as e:
        errors.append(str(e))
    try:
        t.train_steps(t.steps_per_epoch - t.position + 1)
    except ValueError as e:
        errors.append(str(e))
    return {"trace_count": t.trace_count, "device_arrays": all(types), "finite": finite,
            "learning_rates": np.array(t.learning_rates), "keys": np.array(sorted(m)), "errors": np.array(errors)}


def d_rule_skip(inp, out):
    """D far ahead (big D lr, tiny G lr): the ratio rule stops training D on some steps.  Calls of
    2 steps (the program compile_once compiled); D must change exactly in calls that trained it."""
    t = tiny(g_lr=1e-6, d_lr=0.05)
    d_train, opt_d = trainable_keys(t, "d"), [k for k in t.state_arrays() if k.startswith("opt_d/")]
    d_same, opt_same, metrics = [], [], []
    for _ in range(6):
        if t.position >= t.steps_per_epoch:
            t.start_epoch()
        before = t.state_arrays()
        metrics.append({k: np.asarray(v) for k, v in t.train_steps(2).items()})
        after = t.state_arrays()
        d_same.append(same(before, after, d_train))
        opt_same.append(same(before, after, opt_d))
    m = {k: np.concatenate([x[k] for x in metrics]) for k in metrics[0]}
    return dict({f"m_{k}": v for k, v in m.items()}, d_same=np.array(d_same), opt_d_same=np.array(opt_same),
                trace_count=t.trace_count)


def faithful_modes(inp, out):
    """SomTambe's accuracy rule (this step's accuracy before D's update, < 0.8) with D far ahead, and
    64-3D-IWGan.py's n_critic (G on steps 0, 3, 6): one step a call, what changed in D, G and their optimizers."""
    t = tiny(loss="minimax", g_lr=1e-6, d_lr=0.05)
    d_keys = trainable_keys(t, "d") + [k for k in t.state_arrays() if k.startswith("opt_d/")]
    d_same, accuracy, trained = [], [], []
    for _ in range(14):
        if t.position >= t.steps_per_epoch:
            t.start_epoch()
        before = t.state_arrays()
        m = t.train_steps(1)
        d_same.append(same(before, t.state_arrays(), d_keys))
        accuracy.append(float(m["d_accuracy"][0]))
        trained.append(float(m["d_trained"][0]))
    c = tiny(loss="wgan-gp", n_critic=3, g_lr=0.01, d_lr=0.001)
    g_keys = trainable_keys(c, "g") + [k for k in c.state_arrays() if k.startswith("opt_g/")]
    g_same, g_loss = [], []
    for _ in range(7):
        if c.position >= c.steps_per_epoch:
            c.start_epoch()
        before = c.state_arrays()
        g_loss.append(float(c.train_steps(1)["g_loss"][0]))
        g_same.append(same(before, c.state_arrays(), g_keys))
    # R1: the same trainer with and without --r1 10 from the same state: the D losses differ by 5·E‖∇ₓD‖²
    from tf3dgan.training.algorithm import unpack

    plain, r1 = tiny(), tiny(r1_gamma=10.0)
    plain.start_epoch()
    r1.start_epoch()
    state = plain.state_arrays()
    real = jax.numpy.asarray(unpack(DATA[8][state["trainer/perm"][0][:8]], 8))
    d_vars = [v.value for v in plain.D.trainable_variables], [v.value for v in plain.D.non_trainable_variables]

    def total_logit(x):
        out, _ = plain.D.stateless_call(*d_vars, x, training=True)
        return out.sum()

    with cpu_friendly_convolutions(plain.cpu_convolutions):
        grads = np.asarray(jax.grad(total_logit)(real))
    r1_diff = float(r1.train_steps(1)["d_loss"][0]) - float(plain.train_steps(1)["d_loss"][0])
    return dict(d_same=np.array(d_same), accuracy=np.array(accuracy), trained=np.array(trained),
                g_same=np.array(g_same), g_loss=np.array(g_loss), r1_diff=r1_diff,
                r1_expected=5.0 * float(np.mean(np.sum(grads.reshape(8, -1) ** 2, axis=1))))


def stabilisers(inp, out):
    """--augment against its NumPy transcription, --g-ema replayed over 5 steps, and a trainer with every stabiliser
    (augment, EMA, minibatch std) resumed from its checkpoint against one that ran straight through."""
    from _stabiliser_reference import augment as augment_reference
    from _stabiliser_reference import moving_average

    from tf3dgan.training import augment

    grids = np.asarray(unpack_grids(DATA[16], 16), np.float32)[..., None]
    u = np.random.default_rng(2).random((len(grids), augment.DRAWS)).astype(np.float32)
    ops = ("translation", "mirror", "cutout")
    got = np.asarray(augment.augment(jax.numpy.asarray(grids), jax.numpy.asarray(u), ops))
    augment_error = float(np.abs(got - augment_reference(grids, u, ops)).max())
    t = tiny(res=16, g_ema=0.9)
    snapshots = [[np.asarray(a) for a in t._state["g_tr"] + t._state["g_nt"]]]
    for _ in range(5):
        steps(t, 1)
        snapshots.append([np.asarray(a) for a in t._state["g_tr"] + t._state["g_nt"]])
    expected = moving_average(snapshots, 0.9)[-1]
    ema = [np.asarray(a) for a in t._state["ge_tr"] + t._state["ge_nt"]]
    ema_error = max(float(np.abs(a - b).max()) for a, b in zip(ema, expected))

    def make(seed):
        g, d = build_models("rasgan64", width=0.125, resolution=16, output_activation="sigmoid", mbstd=2)
        return JaxGANTrainer(g, d, DATA[16], 16, batch_size=8, seed=seed, g_ema=0.99, augment=ops)

    straight = make(3)
    init = straight.state_arrays()
    straight.start_epoch()
    steps(straight, 3)
    first = make(3)
    first.load_state_arrays(init)
    first.start_epoch()
    steps(first, 1)
    resumed = make(99)
    resumed.load_state_arrays(first.state_arrays())
    steps(resumed, 2)
    a, b = straight.state_arrays(), resumed.state_arrays()
    mismatched = [k for k in a if not np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6)]
    return dict(augment_error=augment_error, ema_error=ema_error, ema_count=int(a["trainer/ema_count"]),
                ema_keys=sum(k.startswith("g_ema/") for k in a), g_keys=sum(k.startswith("g/") for k in a),
                state_mismatch=np.array(mismatched, dtype=str))


def _learning(loss, n=40):
    t = tiny(loss=loss, g_lr=0.01, d_lr=0.001, seed=0)
    z = np.random.default_rng(7).standard_normal((64, 200)).astype(np.float32)
    before = t.generate(z)
    m = steps(t, n, per_call=2)
    after = t.generate(z)
    return dict({f"m_{k}": v for k, v in m.items()}, before=before, after=after, d_rule=t.d_rule,
                trace_count=t.trace_count)


def learn_rasgan(inp, out):
    return _learning("rasgan")


def learn_minimax(inp, out):
    return _learning("minimax")


def wgan_gp(inp, out):
    return _learning("wgan-gp", n=4)


def bfloat16(inp, out):
    t = tiny(precision="mixed_bfloat16", g_lr=0.01, d_lr=0.001)
    m = steps(t, 8, per_call=2)
    x = np.zeros((2, 8, 8, 8, 1), np.float32)
    logits, _ = t.D.stateless_call(t._state["d_tr"], t._state["d_nt"], x, training=True)
    sample = t.generate(np.ones((2, 200), np.float32))
    state = t.state_arrays()
    return dict({f"m_{k}": v for k, v in m.items()}, logits_dtype=str(logits.dtype), sample=sample,
                state_finite=all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f"),
                dtypes=np.array(sorted({f"{k.split('/')[0]}:{v.dtype}" for k, v in state.items()})))


def float16(inp, out):
    """Every call is one step (one compiled program)."""
    t = tiny(precision="mixed_float16", g_lr=0.01, d_lr=0.001)
    g_train = trainable_keys(t, "g")
    x = np.zeros((2, 8, 8, 8, 1), np.float32)
    logits, _ = t.D.stateless_call(t._state["d_tr"], t._state["d_nt"], x, training=True)
    normal = steps(t, 4, per_call=1)             # finite steps: the scale stays, the counters count
    s0 = t.state_arrays()
    # inject an overflow: a loss scale of 2^28 makes the float16 gradients infinite
    t.load_state_arrays(dict(s0, **{"opt_g_scale/dynamic_scale": np.float32(2.0**28),
                                    "opt_d_scale/dynamic_scale": np.float32(2.0**28)}))
    t.start_epoch()
    history, g_changed, opt_g_changed = [t.state_arrays()], [], []
    for _ in range(16):                          # the scale halves on every overflow, then stays
        if t.position >= t.steps_per_epoch:
            t.start_epoch()
        t.train_steps(1)
        history.append(t.state_arrays())
        g_changed.append(not same(history[-2], history[-1], g_train))
        opt_g_changed.append(not same(history[-2], history[-1], [k for k in s0 if k.startswith("opt_g/")]))
    # growth: after dynamic_growth_steps (2000) finite steps in a row the scale doubles
    t.load_state_arrays(dict(history[-1], **{"opt_g_scale/step_counter": np.int64(1997)}))
    grow = []
    for _ in range(3):
        if t.position >= t.steps_per_epoch:
            t.start_epoch()
        grow.append(np.asarray(t.train_steps(1)["loss_scale"])[0])
    end = t.state_arrays()
    return dict({f"normal_{k}": v for k, v in normal.items()}, logits_dtype=str(logits.dtype),
                counter_after_normal=s0["opt_g_scale/step_counter"], scale_after_normal=s0["opt_g_scale/dynamic_scale"],
                scales=np.array([h["opt_g_scale/dynamic_scale"] for h in history]),
                d_scales=np.array([h["opt_d_scale/dynamic_scale"] for h in history]),
                counters=np.array([h["opt_g_scale/step_counter"] for h in history]),
                iterations=np.array([h["opt_g/iteration"] for h in history]),
                g_changed=np.array(g_changed), opt_g_changed=np.array(opt_g_changed), grow_scale=np.array(grow),
                counter_end=end["opt_g_scale/step_counter"], scale_end=end["opt_g_scale/dynamic_scale"],
                scale_dtype=str(end["opt_g_scale/dynamic_scale"].dtype), counter_dtype=str(end["opt_g_scale/step_counter"].dtype),
                trace_count=t.trace_count)


def conv_rewrite(inp, out):
    """D(G(z)) with the CPU convolution rewrite equals the native convolutions, for both
    architectures (forward only: the gradients are checked against TensorFlow in cross_backend)."""
    results = {}
    for arch in ("rasgan64", "3dgan32"):
        g, d = build_models(arch, width=0.125, resolution=8)
        values = lambda vs: [v.value for v in vs]  # noqa: E731
        z = np.random.default_rng(0).standard_normal((4, 200)).astype(np.float32)

        def f(gt, gn, dt, dn):
            x, _ = g.stateless_call(gt, gn, z, training=True)
            y, _ = d.stateless_call(dt, dn, x, training=True)
            return x, y

        args = [values(g.trainable_variables), values(g.non_trainable_variables),
                values(d.trainable_variables), values(d.non_trainable_variables)]
        outs = []
        for enabled in (False, True):
            with cpu_friendly_convolutions(enabled):
                outs.append([np.asarray(a) for a in jax.jit(f)(*args)])
        results[f"{arch}_err"] = np.array([np.abs(a - b).max() for a, b in zip(*outs)])
        results[f"{arch}_scale"] = np.array([np.abs(a).max() for a in outs[0]])
    return results


def cross_backend(inp, out):
    """Load the TensorFlow trainer's checkpoint, check that it round-trips, train 2 steps on the
    test's fixed latents and save the result for the TensorFlow side."""
    arrays, meta = runs.load_checkpoint(inp / "tf_run" / "checkpoints" / "latest.npz")
    lat = np.load(inp / "latents.npz")
    t = tiny(d_rule="always", seed=11, res=16)
    fresh = t.state_arrays()
    t.load_state_arrays(arrays, source="tf checkpoint")
    loaded = t.state_arrays()
    layout = {k: (v.shape, str(v.dtype)) for k, v in fresh.items()}
    tf_layout = {k: (v.shape, str(v.dtype)) for k, v in arrays.items()}
    mismatch = [k for k in arrays if k not in loaded or not np.array_equal(arrays[k], loaded[k])]
    gen_a = t.generate(lat["z"])
    fixed_latents(t, (lat["z1"], lat["z2"]))
    m = {k: np.asarray(v) for k, v in t.train_steps(2).items()}
    runs.save_checkpoint(out / "jax_run", t.state_arrays(), dict(meta, epoch=0), numbered=False)
    return dict({f"m_{k}": v for k, v in m.items()},
                layout_diff=np.array(sorted(map(str, set(layout.items()) ^ set(tf_layout.items())))),
                roundtrip_mismatch=np.array(mismatch, dtype=str), gen_a=gen_a, gen_b=t.generate(lat["z"]),
                position=t.position)


def resume(inp, out):
    a = tiny(seed=5)
    init = a.state_arrays()                            # b starts from a's weights
    a.start_epoch()
    straight = [a.train_steps(2), a.train_steps(2)]
    straight = {k: np.concatenate([np.asarray(m[k]) for m in straight]) for k in straight[0]}
    final_a = a.state_arrays()
    b = tiny(seed=5)
    b.load_state_arrays(init)
    b.start_epoch()
    first = {k: np.asarray(v) for k, v in b.train_steps(2).items()}
    path = out / "jax_resume.npz"
    np.savez(path, **b.state_arrays())
    c = tiny(seed=99)                                  # other weights and key: all must come from the file
    with np.load(path) as z:
        c.load_state_arrays({k: z[k] for k in z.files}, source=str(path))
    second = {k: np.asarray(v) for k, v in c.train_steps(2).items()}
    final_c = c.state_arrays()
    mismatched = [k for k in final_a if not np.array_equal(final_a[k], final_c[k])]
    return dict({f"straight_{k}": v for k, v in straight.items()},
                **{f"resumed_{k}": np.concatenate([first[k], second[k]]) for k in first},
                state_mismatch=np.array(mismatched, dtype=str), position=c.position)


def data_parallel(inp, out):
    """The same run on one device and with keras.distribution.DataParallel over the worker's 2 CPU
    devices (6 steps, calls of 2 and the ratio rule); then the data-parallel state resumes on one
    device.  Also reports what the compiled program does: per-device batch, all-reduces."""
    one = tiny(seed=4)
    m_one = steps(one, 6, per_call=2)
    dp = tiny(seed=4, distribution=make_distribution("mirrored"))
    m_dp = steps(dp, 4, per_call=2)
    mid = dp.state_arrays()
    m_last = steps(dp, 2, per_call=2)
    m_dp = {k: np.concatenate([v, m_last[k]]) for k, v in m_dp.items()}
    hlo = dp._runs[2].lower(dp._state, dp._data, dp._val).compile().as_text()
    resumed = tiny(seed=99)                    # one device, every value from the data-parallel state
    resumed.load_state_arrays(mid)
    m_resumed = steps(resumed, 2, per_call=2)
    s_one, s_dp = one.state_arrays(), dp.state_arrays()
    batch_shapes = sorted(set(re.findall(r"f32\[(\d+),8,8,8,1\]", hlo)))
    return dict({f"one_{k}": v for k, v in m_one.items()}, **{f"dp_{k}": v for k, v in m_dp.items()},
                **{f"resumed_{k}": v for k, v in m_resumed.items()},
                **{f"state_one/{k}": v for k, v in s_one.items()}, **{f"state_dp/{k}": v for k, v in s_dp.items()},
                devices=np.array([str(d) for d in jax.devices()]), replicas=dp.replicas,
                state_replicated=all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == 2
                                     for x in jax.tree_util.tree_leaves(dp._state)), batch_shapes=np.array(batch_shapes, str),
                all_reduces=hlo.count("all-reduce("), one_device_replicas=one.replicas)


SCENARIOS = {f.__name__: f for f in (compile_once, d_rule_skip, faithful_modes, learn_rasgan, learn_minimax, wgan_gp, bfloat16,
                                      float16, conv_rewrite, cross_backend, resume, data_parallel, stabilisers)}


def main(argv):
    out, inp, cache = Path(argv[0]), Path(argv[1]), argv[2]
    assert keras.backend.backend() == "jax", keras.backend.backend()
    jax.config.update("jax_num_cpu_devices", 2)   # for data_parallel; one-device trainers use the first
    # identical programs of different trainers (same configuration) compile once
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    for name in argv[3:]:
        t0 = time.perf_counter()
        try:
            result = SCENARIOS[name](inp, out)
            np.savez(out / f"{name}.npz", **{k: np.asarray(v) for k, v in result.items()})
        except Exception:   # reported by the test that reads this scenario
            (out / f"{name}.error").write_text(traceback.format_exc())
        print(f"{name}: {time.perf_counter() - t0:.1f}s", flush=True)
    blocked = "tensorflow" in sys.modules and sys.modules["tensorflow"] is None
    (out / f"worker-{argv[3]}.txt").write_text(f"tensorflow blocked: {blocked}\n")


if __name__ == "__main__":
    main(sys.argv[1:])

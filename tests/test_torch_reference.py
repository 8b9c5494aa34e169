"""The PyTorch reference of the benchmarks (benchmarks/torch_reference.py) and the A/B driver's bookkeeping.

The reference tests are skipped where PyTorch is not installed (CI does not install it).  They
run in ONE child process with ``KERAS_BACKEND=torch``: TensorFlow (which the rest of the suite
loads into this process) and PyTorch cannot share a process (their LLVMs clash: "LLVM ERROR:
inconsistency in registered CommandLine options" aborts the first PyTorch optimizer step), so
this process never imports torch.  The child checks that the PyTorch models have exactly our
parameter counts and output shapes, that a tiny train step gives finite losses and updates both
networks in float32 and bf16 autocast, that the loss equals ours, and runs the script's command
line (``--json``) as ``python benchmarks/torch_reference.py`` would.  The A/B driver's job list
and summary are checked without running anything.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAVE_TORCH = importlib.util.find_spec("torch") is not None   # found, not imported (see above)
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")

SMALL = [("rasgan64", 0.25, None), ("rasgan64", 0.3, 32), ("rasgan64", 0.125, 16), ("3dgan32", 0.25, None),
         ("3dgan32", 0.3, 16)]
STEPS = [("rasgan64", "float32"), ("rasgan64", "bfloat16"), ("3dgan32", "float32")]
CLI = ["--arch", "rasgan64", "-b", "2", "--resolution", "16", "--width", "0.125", "--precision", "float32", "bf16",
       "--steps", "2", "--warmup", "1", "--threads", "1", "--json"]

_WORKER = r"""
import contextlib, io, json, math, runpy, sys
import numpy as np
import torch
from tf3dgan.models import losses
from tf3dgan.perf.benchmark import step_flops
from tf3dgan.models.networks import build_models as keras_models
root, small, steps, cli = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
sys.path.insert(0, root + "/benchmarks")
import torch_reference as ref
out = {"full": {}, "small": [], "steps": [], "loss": None, "cli": None}
for arch in ("rasgan64", "3dgan32"):
    g, d = ref.build_models(arch)
    out["full"][arch] = [ref.count_params(g), ref.count_params(d)]
for arch, width, res in small:
    kg, kd = keras_models(arch, width, res)
    tg, td = ref.build_models(arch, width, res)
    z = np.random.default_rng(0).normal(size=(2, 200)).astype("float32")
    k_out = kg(z, training=False)
    tg.eval(); td.eval()
    with torch.no_grad():
        t_out = tg(torch.from_numpy(z)); t_logit = td(t_out)
    out["small"].append({"config": [arch, width, res], "keras": [kg.count_params(), kd.count_params()],
                         "torch": [ref.count_params(tg), ref.count_params(td)],
                         "keras_shapes": [list(k_out.shape), list(kd(k_out, training=False).shape)],
                         "torch_shapes": [list(t_out.shape), list(t_logit.shape)],
                         "torch_dtypes": [str(t_out.dtype), str(t_logit.dtype)]})
for arch, precision in steps:
    runner = ref.TorchGANStep(arch, batch=2, width=0.125, resolution=16 if arch == "rasgan64" else 8,
                              precision=precision, seed=1)
    g0 = [p.detach().clone() for p in runner.G.parameters()]
    d0 = [p.detach().clone() for p in runner.D.parameters()]
    losses_seen = [runner.timed_step()[1:] for _ in range(2)]
    out["steps"].append({"config": [arch, precision], "losses": losses_seen,
                         "g_changed": any(not torch.equal(a, b) for a, b in zip(g0, runner.G.parameters())),
                         "d_changed": any(not torch.equal(a, b) for a, b in zip(d0, runner.D.parameters())),
                         "d_unfrozen": all(p.requires_grad for p in runner.D.parameters())})
rng = np.random.default_rng(3)
real, fake = rng.normal(size=(5, 1)).astype("float32") * 4, rng.normal(size=(5, 1)).astype("float32") * 4
out["loss"] = [[float(x) for x in losses.rasgan(real, fake)],
               [float(x) for x in ref.rasgan(torch.from_numpy(real), torch.from_numpy(fake))]]
out["flop"] = step_flops(*keras_models("rasgan64", 0.125, 16), 2)
# the command line, as `python benchmarks/torch_reference.py ...` runs it
stdout, stderr = io.StringIO(), io.StringIO()
sys.argv = [root + "/benchmarks/torch_reference.py"] + cli
code = 0
with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code
out["cli"] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def report():
    if not HAVE_TORCH:
        pytest.skip("PyTorch is not installed")
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_WAIT_POLICY="PASSIVE", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    p = subprocess.run([sys.executable, "-c", _WORKER, str(ROOT), json.dumps(SMALL), json.dumps(STEPS),
                        json.dumps(CLI)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert p.returncode == 0 and lines, (p.stdout[-2000:], p.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT "):])


@needs_torch
@pytest.mark.parametrize("arch, counts", [("rasgan64", [17_604_801, 11_051_457]), ("3dgan32", [2_199_808, 4_650_944])])
def test_full_size_parameter_counts_equal_ours(report, arch, counts):
    assert report["full"][arch] == counts   # README's table; BN running statistics included, as Keras counts


@needs_torch
def test_small_parameter_counts_and_shapes_equal_keras(report):
    assert [tuple(x["config"]) for x in report["small"]] == [tuple(c) for c in SMALL]
    for x in report["small"]:
        assert x["torch"] == x["keras"], x["config"]
        (kg, kd), (tg, td) = x["keras_shapes"], x["torch_shapes"]
        assert tg == [kg[0], kg[4], kg[1], kg[2], kg[3]] and kg[4] == 1       # NCDHW vs NDHWC
        assert td == kd == [2, 1]
        assert x["torch_dtypes"] == ["torch.float32", "torch.float32"]


@needs_torch
def test_tiny_train_steps_are_finite_and_update_both(report):
    assert [tuple(x["config"]) for x in report["steps"]] == STEPS
    for x in report["steps"]:
        assert all(math.isfinite(v) for pair in x["losses"] for v in pair), x
        assert x["g_changed"] and x["d_changed"] and x["d_unfrozen"], x


@needs_torch
def test_rasgan_loss_matches_ours(report):
    ours, theirs = report["loss"]
    assert theirs == pytest.approx(ours, rel=1e-5)


@needs_torch
def test_cli_json_lines_have_the_bench_keys(report):
    cli = report["cli"]
    assert cli["code"] in (0, None), cli["stderr"][-2000:]
    lines = [json.loads(x) for x in cli["stdout"].splitlines() if x.strip()]
    assert [r["precision"] for r in lines] == ["float32", "bfloat16"]
    flop = report["flop"]
    for r in lines:
        for key in ("backend", "precision", "ms_per_step", "samples_per_s", "achieved_tflops", "batch", "arch",
                    "resolution", "width", "device", "torch_version", "threads", "step_tflop", "loadavg_before"):
            assert key in r, key
        assert (r["backend"], r["arch"], r["batch"], r["resolution"], r["width"], r["threads"]) == \
            ("torch", "rasgan64", 2, 16, 0.125, 1)
        assert r["calls_timed"] == 2 and r["ms_per_step"] > 0
        assert r["step_tflop"] == pytest.approx(flop / 1e12, rel=1e-12)
        assert r["achieved_tflops"] == pytest.approx(flop / 1e12 / (r["ms_per_step"] / 1000), rel=1e-3)
        assert r["samples_per_s"] == pytest.approx(2000 / r["ms_per_step"], rel=1e-3)
        assert math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"])
    assert "measured: median of 2" in cli["stderr"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the A/B driver (no benchmark is run)

def _args(**kw):
    base = dict(arch="rasgan64", batch=8, resolution=32, width=1.0, precision=["float32", "bfloat16"], steps=5,
                warmup=1, rounds=2, torch_compile=None, torch_channels_last=False, threads=None,
                python=sys.executable)
    base.update(kw)
    return Namespace(**base)


def test_ab_jobs_pair_precisions_and_backends():
    ab = _load("ab")
    jobs = ab.make_jobs(_args(), ["tf", "jax", "torch", "torch_passive"])
    assert set(jobs) == {(s, p) for s in ("tf", "jax", "torch", "torch_passive") for p in ("float32", "bfloat16")}
    cmd, env = jobs[("tf", "bfloat16")]
    assert cmd[1].endswith("tools/bench.py") and cmd[cmd.index("--precision") + 1] == "mixed_bfloat16"
    assert env["KERAS_BACKEND"] == "tensorflow" and "--json" in cmd and cmd[cmd.index("--resolution") + 1] == "32"
    cmd, env = jobs[("jax", "float32")]
    assert cmd[cmd.index("--backend") + 1] == "jax" and env["KERAS_BACKEND"] == "jax"
    cmd, env = jobs[("torch", "bfloat16")]
    assert cmd[1].endswith("benchmarks/torch_reference.py") and cmd[cmd.index("--precision") + 1] == "bfloat16"
    assert "OMP_WAIT_POLICY" not in env
    assert jobs[("torch_passive", "float32")][1]["OMP_WAIT_POLICY"] == "PASSIVE"


def test_ab_summary_medians_and_ratios():
    ab = _load("ab")
    args = _args(precision=["float32"], rounds=2)

    def run(rnd, side, ms, **extra):
        r = dict(backend="torch" if side.startswith("torch") else "tf", ms_per_step=ms, step_tflop=0.1, **extra)
        return {"round": rnd, "side": side, "precision": "float32", "results": [r]}

    runs = [run(0, "tf", 100.0), run(0, "torch", 300.0, mode="eager"), run(0, "torch_passive", 200.0, mode="eager"),
            run(1, "torch_passive", 240.0, mode="eager"), run(1, "torch", 330.0, mode="eager"), run(1, "tf", 120.0)]
    s = ab.summarize(runs, args, ["tf", "torch", "torch_passive"])
    rows = {x["side"]: x for x in s["rows"]}
    assert rows["tf"]["ms_per_step"] == 110.0 and rows["torch"]["ms_per_step"] == 315.0
    assert rows["tf"]["samples_per_s"] == pytest.approx(8000 / 110, rel=1e-3)
    by = {r["torch"]: r for r in s["ratios"]}
    assert by["torch eager float32"]["ratio_torch_over_ours"] == pytest.approx(315 / 110, abs=1e-3)
    assert by["torch eager float32"]["ratio_by_round"] == {0: 3.0, 1: 2.75}
    assert by["fastest: torch eager float32 OMP passive"]["ratio_torch_over_ours"] == pytest.approx(220 / 110,
                                                                                                     abs=1e-3)
    text = ab.format_summary(s, 2, "header")
    assert "ratio torch / ours" in text and "2.86" in text and "2.00" in text


def test_ab_from_json_resummarizes_saved_runs(tmp_path, capsys):
    ab = _load("ab")

    def run(rnd, side, ms):
        r = dict(backend="torch" if side == "torch" else "tf", arch="rasgan64", resolution=32, width=1.0, batch=8,
                 ms_per_step=ms, ms_per_step_min=ms - 1, step_tflop=0.1, device="CPU: test", tf_version="x",
                 keras_version="y", torch_version="z", threads=2, **({"mode": "eager"} if side == "torch" else {}))
        return {"round": rnd, "side": side, "precision": "float32", "results": [r], "error": None,
                "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [2.0, 2.0, 2.0]}

    path = tmp_path / "ab.jsonl"
    lines = [run(0, "tf", 100.0), run(0, "torch", 160.0), run(1, "torch", 150.0), run(1, "tf", 100.0)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"summary": true}\n')
    assert ab.main(["--from-json", str(path)]) == 0
    text = capsys.readouterr().out
    assert "rasgan64 32³ width 1 batch 8; 2 interleaved round(s) from" in text
    assert "torch eager float32 / ours tf float32: 1.55" in text

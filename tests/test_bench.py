"""Tests for tf3dgan.perf.benchmark and tools/bench.py (FLOP counts exact; one tiny timed CLI run, ~15 s)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest

from tf3dgan.models.networks import build_models
from tf3dgan.perf import benchmark
from tf3dgan.perf.benchmark import forward_flops, step_flops

ROOT = Path(__file__).resolve().parents[1]


def test_step_flops_rasgan64_batch24_matches_measurements():
    g, d = build_models("rasgan64")
    flop = step_flops(g, d, 24)
    assert flop / 1e12 == pytest.approx(2.62, rel=0.01)   # shared/MEASUREMENTS.md
    assert step_flops(g, d, 8) * 3 == flop


def test_forward_flops_rasgan64_by_hand():
    g, d = build_models("rasgan64")
    k = 4**3
    f_g = (200 * 4**3 * 512 + 4**3 * k * 512 * 256 + 8**3 * k * 256 * 128 + 16**3 * k * 128 * 64
           + 32**3 * k * 64 * 1) * 2
    f_d = (32**3 * k * 1 * 64 + 16**3 * k * 64 * 128 + 8**3 * k * 128 * 256 + 4**3 * k * 256 * 512
           + 4**3 * 512 * 1) * 2
    assert forward_flops(g) == f_g == forward_flops(g, (None, 200))
    assert forward_flops(d) == f_d == forward_flops(d, (64, 64, 64, 1))
    assert step_flops(g, d, 1) == 4 * f_g + 10 * f_d


def test_forward_flops_tiny_hand_checked():
    # per sample: (4,) -Dense-> 16 -> (2,2,2,2) -ConvT k2 s2-> (4,4,4,3) -Conv k3 same-> (4,4,4,5)
    #             -Conv k2 s2-> (2,2,2,1) -> 8 -Dense-> 1
    L = keras.layers
    model = SimpleNamespace(blocks=[L.Dense(16), L.Reshape((2, 2, 2, 2)), L.Conv3DTranspose(3, 2, strides=2),
                                    L.ReLU(), L.Conv3D(5, 3, padding="same"), L.BatchNormalization(),
                                    L.Conv3D(1, 2, strides=2), L.Flatten(), L.Dense(1)])
    dense1 = 2 * 4 * 16                   # 128
    convt = 2 * 2**3 * 2**3 * 2 * 3       # input voxels × k³ × Cin × Cout: 768
    conv_same = 2 * 4**3 * 3**3 * 3 * 5   # output voxels × k³ × Cin × Cout: 51840
    conv_s2 = 2 * 2**3 * 2**3 * 5 * 1     # 640
    dense2 = 2 * 8 * 1                    # 16
    assert dense1 + convt + conv_same + conv_s2 + dense2 == 53392
    assert forward_flops(model, (4,)) == 53392 == forward_flops(model, (None, 4))


def test_forward_flops_plain_sequential_and_other_layers_free():
    model = keras.Sequential([keras.Input((5, 5, 5, 3)), keras.layers.Conv3D(4, 3, padding="same"),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    assert forward_flops(model, (5, 5, 5, 3)) == 2 * (125 * 27 * 3 * 4 + 500 * 2)


def test_forward_flops_needs_known_shape():
    g, _ = build_models("rasgan64", width=1 / 32, resolution=8)
    with pytest.raises(ValueError, match="per-sample input shape"):
        forward_flops(g, (None, None))


def test_table_formatting():
    row = dict(arch="rasgan64", resolution=64, width=1.0, batch=8, precision="float32", xla=False,
               steps_per_call=1, ms_per_step=4960.0, samples_per_s=1.613, achieved_gflops=175.9, pct_of_peak=None)
    table = benchmark.format_table([row, dict(row, xla=True, steps_per_call=4, pct_of_peak=12.34)])
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["config", "ms/step"]
    assert "rasgan64 64³ w1 b8 float32 tf.function" in lines[1] and lines[1].rstrip().endswith("-")
    assert "xla spc4" in lines[2] and lines[2].rstrip().endswith("12.3")


@pytest.mark.slow
def test_cli_json_tiny_run(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--arch", "rasgan64", "--resolution",
                           "16", "--width", "0.125", "-b", "4", "--steps", "2", "--warmup", "1", "--json",
                           "--peak-tflops", "1", "--conv-transpose", "native", "phase", "--profile", str(tmp_path / "prof"),
                           "--profile-calls", "2"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, proc.stdout
    r, phase = map(json.loads, lines)
    assert (r["conv_transpose"], phase["conv_transpose"]) == ("native", "phase")
    assert phase["trace_count"] == 1 and phase["step_tflop"] == r["step_tflop"] and phase["ms_per_step"] > 0
    for prof in (r["profile"], phase["profile"]):   # --profile: the traced calls' ops, summed by name
        assert prof["device"] == "host" and prof["total_ms"] > 0, prof
        assert Path(prof["folder"]).parent == tmp_path / "prof" and list(Path(prof["folder"]).rglob("*.xplane.pb"))
        assert 0 < len(prof["kernels"]) <= 15 and 0 < sum(k["share"] for k in prof["kernels"]) <= 1 + 1e-9
        assert all(k["ms"] > 0 and k["count"] > 0 for k in prof["kernels"])
    native_ops = " ".join(k["name"] for k in r["profile"]["kernels"])
    assert "Conv3D" in native_ops, native_ops                    # TensorFlow's executor ops: scope/op:Kernel
    kinds = {k["name"]: k["share"] for k in r["profile"]["kinds"]}   # the same summed by kernel type
    assert any("Conv3D" in k for k in kinds) and all(":" not in k and "/" not in k for k in kinds), kinds
    assert sum(kinds.values()) <= 1 + 1e-9 and max(kinds.values()) >= max(k["share"] for k in r["profile"]["kernels"])
    assert set(benchmark.RESULT_KEYS) <= set(r)
    assert (r["backend"], r["arch"], r["batch"], r["precision"], r["xla"]) == ("tf", "rasgan64", 4, "float32", False)
    assert (r["resolution"], r["width"], r["steps_per_call"]) == (16, 0.125, 1)
    for key in ("ms_per_step", "samples_per_s", "step_tflop", "achieved_tflops", "achieved_gflops", "pct_of_peak"):
        assert r[key] > 0, key
    assert r["samples_per_s"] == pytest.approx(4000 / r["ms_per_step"], rel=1e-3)
    assert r["achieved_gflops"] == pytest.approx(1000 * r["achieved_tflops"], rel=1e-3)
    assert r["pct_of_peak"] == pytest.approx(100 * r["achieved_tflops"], rel=1e-3, abs=1e-3)   # printed rounded
    assert r["trace_count"] == 1
    assert r["calls_timed"] == r["steps_timed"] == 2
    assert r["device"] and r["tf_version"] and r["keras_version"]
    assert "measured:" in proc.stderr


def test_cli_rejects_bad_options(capsys):
    from tf3dgan.tools import bench as tool  # tools/ installed as tf3dgan.tools (setup.py)

    with pytest.raises(SystemExit) as exc:
        tool.main(["--resolution", "12"])
    assert exc.value.code == 2 and "power of two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["-b", "0"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:      # one configuration: nothing to compare, said before any timing
        tool.main(["--compare", "-b", "8"])
    assert exc.value.code == 2 and "--compare needs at least two configurations" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:      # --profile names a file, not a folder: refused up front
        tool.main(["--profile", __file__])
    assert exc.value.code == 2 and "is not a folder" in capsys.readouterr().err
    args = tool.build_parser().parse_args(["-b", "8", "24", "--xla", "both", "--precision", "float32", "mixed_bfloat16"])
    assert (args.batch, args.xla, args.precision) == ([8, 24], "both", ["float32", "mixed_bfloat16"])
    assert tool.build_parser().parse_args(["--xla"]).xla == "on"
    assert tool.build_parser().parse_args(["--xla", "--no-xla"]).xla == "off"


# ------------------------------------------------------------------ tf3dgan.perf.bench_runs, called directly


def test_bench_options_check_count_and_child_flags(tmp_path):
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.perf.bench_runs import BenchOptions
    from tf3dgan.tools import bench as tool

    options = BenchOptions(backend=["tf", "jax"], batch=[4, 8], precision=["float32", "mixed_bfloat16"], xla="both",
                           conv_transpose=["native", "phase", "native"], resolution=16, peak_tflops=2.5,
                           profile=str(tmp_path / "prof"))
    options.check()
    assert options.axes("tf")["xla"] == [False, True] and options.axes("jax")["xla"] == [False]
    assert options.axes("tf")["conv_transpose"] == ["native", "phase"]
    assert options.count() == 2 * 2 * 2 * 2 + 2 * 2 * 2          # tf: × xla on/off; jax always compiles with XLA
    flags = options.child_args("jax")
    parsed = tool.build_parser().parse_args(flags)          # the child's command line is the tool's
    assert (parsed.backend, parsed.batch, parsed.xla, parsed.resolution, parsed.json) == (["jax"], [4, 8], "both", 16, True)
    assert parsed.peak_tflops == 2.5 and parsed.profile == str(tmp_path / "prof") and parsed.precision == options.precision
    for kwargs, words in ((dict(resolution=12), "power of two"), (dict(batch=[8, 0]), "--batch must be >= 1"),
                          (dict(peak_tflops=0.0), "--peak-tflops must be positive"),
                          (dict(profile=__file__), "is not a folder"),
                          (dict(compare=True, batch=[8]), "--compare needs at least two configurations")):
        with pytest.raises(Tf3dganError, match=words):
            BenchOptions(**{"backend": ["tf"], **kwargs}).check()


@pytest.mark.slow
def test_run_bench_times_a_tiny_step_in_process(tmp_path):
    import io

    from tf3dgan.perf.bench_runs import BenchOptions, run_bench

    out, err = io.StringIO(), io.StringIO()
    options = BenchOptions(backend=["tf"], resolution=16, width=0.125, batch=[2, 4], steps=2, warmup=1, compare=True)
    results = run_bench(options, out=out, err=err)
    assert [r["batch"] for r in results] == [2, 4] and all(r["ms_per_step"] > 0 for r in results)
    assert results[0]["step_tflop"] == pytest.approx(results[1]["step_tflop"] / 2)   # FLOPs scale with the batch
    lines = out.getvalue().splitlines()
    assert lines[0] == benchmark.format_row(benchmark.TABLE_HEADER)
    assert lines[1:3] == [benchmark.format_row(r) for r in results]
    assert lines[3:5] == ["", f"relative to {benchmark.config_label(results[0])} ({results[0]['ms_per_step']:.1f} ms/step):"]
    assert lines[-1].startswith("measured: median of 2 timed call(s)") and "rasgan64 16³ width 0.125" in lines[-1]
    assert err.getvalue() == ""

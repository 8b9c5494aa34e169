#!/usr/bin/env python3
"""A/B speed comparison on one machine: our Keras train step against the PyTorch reference.

Runs, one subprocess at a time (never two at once, so they do not share the cores):

* ours: ``tools/bench.py --json`` on the TensorFlow backend (``float32`` and ``mixed_bfloat16``),
  and on the JAX backend too when ``tools/bench.py --help`` offers ``--backend jax``;
* the reference: ``benchmarks/torch_reference.py --json`` (eager ``float32`` and
  ``torch.autocast`` bfloat16; ``--torch-compile`` adds or uses ``torch.compile``), by default
  twice: with the OpenMP runtime's default wait policy and with ``OMP_WAIT_POLICY=PASSIVE``
  (PyTorch's OpenMP threads spin at every parallel region's barrier; on a machine shared with
  other jobs that spinning costs PyTorch up to 10× at small sizes, so the faster of the two is
  the fair reference there; ``--torch-omp`` picks one),

interleaved per precision and reversed every other round (A B / B A ...) so a drift in the
machine's load hits both sides alike.  Prints ms/step per configuration and round, the median over
rounds and the best single step, and the ratio torch / ours per precision (> 1: ours is faster) of
both, with the 1/5/15-minute load averages before and after.

    python benchmarks/ab.py --arch rasgan64 -b 8 --steps 5 --warmup 1 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench.py"
TORCH_REF = ROOT / "benchmarks" / "torch_reference.py"
# our precision name / the reference's, per compared precision
PRECISIONS = {"float32": ("float32", "float32"), "bfloat16": ("mixed_bfloat16", "bfloat16")}
_ALIASES = {"float32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "mixed_bfloat16": "bfloat16"}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def jax_backend_available(python: str = sys.executable) -> bool:
    """Whether ``tools/bench.py`` takes ``--backend jax`` (looked up in its ``--help``)."""
    try:
        out = subprocess.run([python, str(BENCH), "--help"], capture_output=True, text=True, timeout=300,
                             cwd=ROOT, env=_env("tensorflow")).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--backend" in out and "jax" in out


def _env(keras_backend: str | None) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if keras_backend is None:
        env.pop("KERAS_BACKEND", None)
    else:
        env["KERAS_BACKEND"] = keras_backend
    return env


def _common(args) -> list[str]:
    cmd = ["--arch", args.arch, "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"]
    if args.width != 1.0:
        cmd += ["--width", repr(args.width)]
    if args.resolution is not None:
        cmd += ["--resolution", str(args.resolution)]
    return cmd


def make_jobs(args, backends: list[str]) -> dict[tuple[str, str], tuple[list[str], dict]]:
    """``{(side, precision): (command, env)}``; side is ``tf``, ``jax``, ``torch`` (the OpenMP
    runtime's default wait policy) or ``torch_passive`` (``OMP_WAIT_POLICY=PASSIVE``)."""
    jobs = {}
    py = args.python
    for prec in args.precision:
        ours, ref = PRECISIONS[prec]
        for side in backends:
            if side.startswith("torch"):
                cmd = [py, str(TORCH_REF), "-b", str(args.batch), "--precision", ref] + _common(args)
                if args.torch_compile:
                    cmd += ["--compile", args.torch_compile]
                if args.torch_channels_last:
                    cmd += ["--channels-last"]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                env = _env(None)
                env.pop("OMP_WAIT_POLICY", None)
                if side == "torch_passive":
                    env["OMP_WAIT_POLICY"] = "PASSIVE"
            else:
                cmd = [py, str(BENCH), "-b", str(args.batch), "--precision", ours] + _common(args)
                if side == "jax":
                    cmd += ["--backend", "jax"]
                env = _env("jax" if side == "jax" else "tensorflow")
            jobs[(side, prec)] = (cmd, env)
    return jobs


def run_job(cmd: list[str], env: dict, timeout: float) -> tuple[list[dict], str | None, float]:
    """Run one benchmark subprocess; its JSON lines, an error line (or None) and the wall time."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:g} s", time.perf_counter() - t0
    wall = time.perf_counter() - t0
    results = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    err = None
    if p.returncode != 0 or not results:
        tail = [x for x in (p.stderr or p.stdout).strip().splitlines() if x.strip()][-1:] or ["no output"]
        err = f"exit status {p.returncode}: {tail[0][:300]}"
    return results, err, wall


def _label(side: str, prec: str, r: dict | None, args) -> str:
    if side.startswith("torch"):
        mode = (r or {}).get("mode") or ("torch.compile" if args.torch_compile == "on" else "eager")
        return (f"torch {mode} {'float32' if prec == 'float32' else 'autocast bf16'}"
                + (" OMP passive" if side == "torch_passive" else ""))
    return f"ours {side} {PRECISIONS[prec][0]}" + (" xla" if (r or {}).get("xla") else "")


def summarize(runs: list[dict], args, backends: list[str]) -> dict:
    """Per configuration: ms/step of every round and their median; ratios torch / ours per precision."""
    rows, ratios = [], []
    by_key: dict = {}
    for run in runs:
        for r in run["results"]:
            key = (run["side"], run["precision"], r.get("mode", "keras"))
            by_key.setdefault(key, {})[run["round"]] = r
    for (side, prec, mode), rounds in by_key.items():
        ms = [rounds[i]["ms_per_step"] for i in sorted(rounds)]
        any_r = next(iter(rounds.values()))
        med = statistics.median(ms)
        best = min(rounds[i].get("ms_per_step_min", rounds[i]["ms_per_step"]) for i in rounds)
        rows.append({"side": side, "precision": prec, "mode": mode, "label": _label(side, prec, any_r, args),
                     "ms_per_step_by_round": {i: rounds[i]["ms_per_step"] for i in sorted(rounds)},
                     "ms_per_step": round(med, 3), "ms_per_step_best": round(best, 3),
                     "samples_per_s": round(args.batch * 1000.0 / med, 3),
                     "achieved_gflops": round(any_r["step_tflop"] * 1e3 / (med / 1000.0), 3),
                     "step_tflop": any_r["step_tflop"]})
    for prec in args.precision:
        torch_rows = [x for x in rows if x["side"].startswith("torch") and x["precision"] == prec]
        for ours_side in [b for b in backends if not b.startswith("torch")]:
            ours_rows = [x for x in rows if x["side"] == ours_side and x["precision"] == prec]
            for o in ours_rows:
                for t in torch_rows:
                    per_round = {i: round(t["ms_per_step_by_round"][i] / o["ms_per_step_by_round"][i], 3)
                                 for i in o["ms_per_step_by_round"] if i in t["ms_per_step_by_round"]}
                    ratios.append({"precision": prec, "ours": o["label"], "torch": t["label"],
                                   "ratio_torch_over_ours": round(t["ms_per_step"] / o["ms_per_step"], 3),
                                   "ratio_best_steps": round(t["ms_per_step_best"] / o["ms_per_step_best"], 3),
                                   "ratio_by_round": per_round})
                if len(torch_rows) > 1:   # against the fastest reference variant (the conservative ratio)
                    t = min(torch_rows, key=lambda x: x["ms_per_step"])
                    best = min(x["ms_per_step_best"] for x in torch_rows)
                    ratios.append({"precision": prec, "ours": o["label"], "torch": "fastest: " + t["label"],
                                   "ratio_torch_over_ours": round(t["ms_per_step"] / o["ms_per_step"], 3),
                                   "ratio_best_steps": round(best / o["ms_per_step_best"], 3),
                                   "ratio_by_round": {}, "fastest_torch": True})
    return {"rows": rows, "ratios": ratios}


def _versions(r: dict) -> str:
    if r.get("backend") == "torch":
        return f"PyTorch {r.get('torch_version')} ({r.get('threads')} threads)"
    if r.get("backend") == "jax":
        return f"JAX {r.get('jax_version', '?')}, Keras {r.get('keras_version')}"
    return f"TensorFlow {r.get('tf_version')}, Keras {r.get('keras_version')}"


def run_header(runs: list[dict], how: str, load: str, defaults: dict | None = None) -> str:
    """The summary's first line: the configuration (from the first result, else ``defaults``),
    ``how`` it was measured, the device, the library versions and the ``load`` averages."""
    first = dict(defaults or {}, **next((r for run in runs for r in run["results"]), {}))
    versions = sorted({_versions(r) for run in runs for r in run["results"]})
    width = first.get("width")
    width = f"{width:g}" if isinstance(width, (int, float)) else width
    return (f"{first.get('arch')} {first.get('resolution')}³ width {width} batch {first.get('batch')}; "
            f"{how}; on {first.get('device', '?')}; {'; '.join(versions)}; 1/5/15-min load average {load}")


def format_summary(summary: dict, rounds: int, header: str) -> str:
    lines = [header, ""]
    cols = [f"round {i + 1}" for i in range(rounds)]
    lines.append("config".ljust(40) + "".join(c.rjust(11) for c in cols)
                 + "median ms".rjust(12) + "best ms".rjust(10) + "samples/s".rjust(11) + "GFLOP/s".rjust(10))
    for x in summary["rows"]:
        cells = [f"{x['ms_per_step_by_round'][i]:.1f}" if i in x["ms_per_step_by_round"] else "-"
                 for i in range(rounds)]
        lines.append(x["label"].ljust(40) + "".join(c.rjust(11) for c in cells) + f"{x['ms_per_step']:.1f}".rjust(12)
                     + f"{x['ms_per_step_best']:.1f}".rjust(10) + f"{x['samples_per_s']:.3f}".rjust(11)
                     + f"{x['achieved_gflops']:.1f}".rjust(10))
    if summary["ratios"]:
        lines += ["", "ratio torch / ours (> 1 means ours is faster): of the median ms/step over rounds "
                      "[of the best single step]:"]
        for r in summary["ratios"]:
            per = ", ".join(f"round {i + 1}: {v:.2f}" for i, v in sorted(r["ratio_by_round"].items()))
            lines.append(f"  {r['precision']:9s} {r['torch']} / {r['ours']}: {r['ratio_torch_over_ours']:.2f} "
                         f"[{r['ratio_best_steps']:.2f}]" + (f"  ({per})" if per else ""))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="A/B: our Keras train step (tools/bench.py) against the PyTorch "
                                            "reference (benchmarks/torch_reference.py), interleaved.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="rasgan64", choices=("rasgan64", "3dgan32"))
    p.add_argument("-b", "--batch", type=int, default=8, help="batch size")
    p.add_argument("--resolution", type=int, default=None, help="grid size [default: the architecture's native one]")
    p.add_argument("--width", type=float, default=1.0, help="channel-width multiplier")
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=sorted(_ALIASES),
                   help="compared precisions: float32 (both sides), bfloat16 (ours mixed_bfloat16 vs torch autocast)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (each run reports its median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    p.add_argument("--rounds", type=int, default=2, help="A/B rounds (the order is reversed every other round)")
    p.add_argument("--backends", nargs="+", default=None, choices=("tf", "jax", "torch"),
                   help="sides to run [default: tf, jax if tools/bench.py has --backend jax, torch]")
    p.add_argument("--torch-omp", default="both", choices=("default", "passive", "both"),
                   help="the reference's OpenMP wait policy: the runtime's default, OMP_WAIT_POLICY=PASSIVE, or both "
                        "(two reference runs per round; ratios are given against each and the faster)")
    p.add_argument("--torch-compile", nargs="?", const="on", default=None, choices=("on", "both"),
                   help="run the reference under torch.compile (on) or both eager and compiled (both)")
    p.add_argument("--torch-channels-last", action="store_true", help="the reference with channels_last_3d tensors")
    p.add_argument("--threads", type=int, default=None, help="torch threads [default: all logical cores]")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark subprocess")
    p.add_argument("--python", default=sys.executable, help="interpreter for the subprocesses")
    p.add_argument("--json", action="store_true", help="JSON lines: every run's results, then one summary object")
    p.add_argument("--from-json", metavar="FILE", default=None,
                   help="run nothing: summarize the run lines of an earlier --json output (the same flags as then)")
    return p


def _from_json(args) -> int:
    with open(args.from_json, encoding="utf-8") as f:
        runs = [r for r in (json.loads(x) for x in f if x.strip().startswith("{")) if "round" in r]
    if not runs:
        print(f"{args.from_json}: no run lines", file=sys.stderr)
        return 1
    args.rounds = max(r["round"] for r in runs) + 1
    args.precision = list(dict.fromkeys(r["precision"] for r in runs))
    backends = list(dict.fromkeys(r["side"] for r in runs))
    header = run_header(runs, f"{args.rounds} interleaved round(s) from {args.from_json}",
                        f"{runs[0]['loadavg_before']} at the first run, {runs[-1]['loadavg_after']} after the last")
    first = next((r for run in runs for r in run["results"]), {})
    args.batch = first.get("batch", args.batch)
    print(format_summary(summarize(runs, args, backends), args.rounds, header))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run_rounds(args, backends, jobs, runs, out) -> None:
    for rnd in range(args.rounds):
        for prec in args.precision:
            order = backends if rnd % 2 == 0 else list(reversed(backends))
            for side in order:
                cmd, env = jobs[(side, prec)]
                la = loadavg()
                results, err, wall = run_job(cmd, env, args.timeout)
                run = {"round": rnd, "side": side, "precision": prec, "command": shlex.join(cmd),
                       "results": results, "error": err, "wall_s": round(wall, 1), "loadavg_before": la,
                       "loadavg_after": loadavg()}
                runs.append(run)
                ms = ", ".join(f"{r['ms_per_step']:.1f} ms/step" for r in results) or "-"
                out(f"round {rnd + 1} {side:13s} {prec:9s} {ms}  (wall {wall:.0f} s, load {la} -> "
                    f"{run['loadavg_after']})" + (f"  ERROR {err}" if err else ""))
                if args.json:
                    print(json.dumps(run), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.precision = list(dict.fromkeys(_ALIASES[p] for p in args.precision))
    for name, v, low in (("-b", args.batch, 1), ("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                         ("--rounds", args.rounds, 1)):
        if v < low:
            parser.error(f"{name} must be >= {low}")
    if args.from_json:
        return _from_json(args)
    jax_ok = jax_backend_available(args.python)
    if args.backends is None:
        backends = ["tf"] + (["jax"] if jax_ok else []) + ["torch"]
    else:
        backends = list(dict.fromkeys(args.backends))
        if "jax" in backends and not jax_ok:
            print("note: tools/bench.py has no --backend jax; skipping the JAX side", file=sys.stderr)
            backends.remove("jax")
    if "torch" in backends:
        i = backends.index("torch")
        backends[i:i + 1] = {"default": ["torch"], "passive": ["torch_passive"],
                             "both": ["torch", "torch_passive"]}[args.torch_omp]
    jobs = make_jobs(args, backends)
    out = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    load_before = loadavg()
    out(f"A/B on {platform.node()}: sides {', '.join(backends)}; {args.rounds} round(s); load average "
        f"(1/5/15 min) {load_before}")
    runs, interrupted = [], False
    signal.signal(signal.SIGTERM, _interrupt)   # SIGTERM as Ctrl-C: the running child is killed, the summary printed
    try:
        _run_rounds(args, backends, jobs, runs, out)
    except KeyboardInterrupt:
        interrupted = True
        out("interrupted: summary of the runs so far")
    load_after = loadavg()
    summary = summarize(runs, args, backends)
    header = run_header(runs, f"median of {args.steps} timed step(s) after {args.warmup} warm-up per run; "
                              f"{args.rounds} interleaved round(s)", f"{load_before} before, {load_after} after",
                        defaults={"arch": args.arch, "resolution": args.resolution, "width": args.width,
                                  "batch": args.batch})
    errors = [f"round {r['round'] + 1} {r['side']} {r['precision']}: {r['error']}" for r in runs if r["error"]]
    if args.json:
        print(json.dumps({"summary": True, "interrupted": interrupted, "header": header, "backends": backends,
                          "rows": summary["rows"], "ratios": summary["ratios"], "loadavg_before": load_before,
                          "loadavg_after": load_after,
                          "errors": errors, "argv": sys.argv}), flush=True)
    else:
        print()
        print(format_summary(summary, args.rounds, header + ("; INTERRUPTED" if interrupted else "")))
        for e in errors:
            print("error:", e)
    return 1 if errors and not summary["rows"] else 0


if __name__ == "__main__":
    sys.exit(main())

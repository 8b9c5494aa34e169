#!/usr/bin/env python3
"""PyTorch reference of the rasgan64 / 3dgan32 GAN train step, for A/B speed comparisons.

The same two architectures as ``tf3dgan.models.networks`` written the way a PyTorch user writes them
(``nn.Module``, channels-first ``(N, C, D, H, W)``), with the same layer sizes and output shapes,
and the same train step as ``tf3dgan.training.backends.tensorflow.GANTrainer`` with ``d_rule="always"`` (what
``tools/bench.py`` times):

* D update: G forward on fresh latents (BatchNorm in training mode, no gradient kept), D
  forward on the real and the fake batch (two calls, as ours), RaSGAN loss, Adam step;
* G update on a **fresh** real batch and fresh latents: G forward, D forward on both batches,
  G's loss, backward to G only (D's weights are frozen with ``requires_grad_(False)`` for this
  phase, the usual PyTorch idiom, so no gradient of D's weights is computed — as TensorFlow's
  tape does), Adam step;
* the RaSGAN loss in the softplus form (``tf3dgan.models.losses.rasgan``), summed, in float32;
* Adam with β1 = 0.5, β2 = 0.999, ε = 1e-7 (Keras' default), lr 0.002 (G) / 0.00005 (D);
* BatchNorm momentum 0.1 (= Keras 0.9), ε 1e-5; weights N(0, 0.02), biases 0, G's BN γ N(1, 0.02).

Precision modes: ``float32``; ``bfloat16`` = ``torch.autocast(device, dtype=torch.bfloat16)``
around the forward passes (float32 weights and optimizer, like Keras' ``mixed_bfloat16``; D's
logit layer and G's output are float32 as in ours).  ``--compile`` wraps G and D in
``torch.compile`` (the first warm-up step includes the compilation).

The analytic FLOP count is ``tf3dgan.perf.benchmark.step_flops`` of the Keras pair (built without
weights), so both sides divide by the same number.  Run as a script for a table or ``--json``
lines with the keys of ``tools/bench.py --json`` (``backend`` = ``"torch"``).

    python benchmarks/torch_reference.py --arch rasgan64 -b 8 --precision float32 bfloat16 --steps 5 --warmup 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:   # run as a script from a checkout: tf3dgan is importable without installing
    sys.path.append(_ROOT)

ARCHS = ("rasgan64", "3dgan32")
LATENT_DIM = 200
NATIVE_RESOLUTION = {"rasgan64": 64, "3dgan32": 32}
DEFAULT_OUTPUT = {"rasgan64": "linear", "3dgan32": "sigmoid"}
PRECISIONS = ("float32", "bfloat16")
_PRECISION_ALIASES = {"float32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                      "mixed_bfloat16": "bfloat16"}
BN_KW = dict(eps=1e-5, momentum=0.1)   # Keras momentum 0.9 == PyTorch momentum 0.1
ADAM_EPS = 1e-7                        # Keras' Adam default (PyTorch's is 1e-8)
G_LR, D_LR = 0.002, 0.00005


def channels(base: int, width: float) -> int:
    """Channel count of a layer whose full-width count is ``base`` (same rounding as tf3dgan)."""
    return max(1, int(round(base * width)))


def check_config(arch: str, width: float, resolution: int | None) -> int:
    """Validate like ``tf3dgan.models.networks.make_spec``; returns the resolution."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    r = NATIVE_RESOLUTION[arch] if resolution is None else resolution
    smallest = 8 if arch == "rasgan64" else 4
    if int(r) != r or r < smallest or int(r) & (int(r) - 1):
        raise ValueError(f"{arch}: resolution must be a power of two >= {smallest}, got {r}")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width}")
    return int(r)


# ---------------------------------------------------------------------------------------- models

def _init_weights(module: nn.Module, bn_gamma_std: float | None) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            if bn_gamma_std is None:
                nn.init.ones_(m.weight)
            else:
                nn.init.normal_(m.weight, 1.0, bn_gamma_std)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """Latent vectors ``(N, latent_dim)`` → voxel grids ``(N, 1, R, R, R)`` (float32)."""

    def __init__(self, arch: str = "rasgan64", width: float = 1.0, resolution: int | None = None,
                 output_activation: str | None = None, latent_dim: int = LATENT_DIM):
        super().__init__()
        r = check_config(arch, width, resolution)
        self.arch, self.resolution, self.latent_dim = arch, r, latent_dim
        stages = int(math.log2(r // (4 if arch == "rasgan64" else 2)))
        chans = [channels(64 * 2**i, width) for i in reversed(range(stages))]
        self.c0 = chans[0]
        if arch == "rasgan64":
            # Dense(z -> 4^3 * C0) -> reshape (C0, 4, 4, 4) -> BN -> ReLU
            self.fc = nn.Linear(latent_dim, 4 * 4 * 4 * chans[0])
            self.stem = nn.Sequential(nn.BatchNorm3d(chans[0], **BN_KW), nn.ReLU(inplace=True))
            up = dict(kernel_size=4, stride=2, padding=1)          # Keras k4 s2 "same": 2x the size
        else:
            # z as a 1^3 x latent grid -> ConvTranspose k2 s1 (1 -> 2)
            self.fc = None
            self.stem = nn.Sequential(nn.ConvTranspose3d(latent_dim, chans[0], 2, stride=1, bias=False),
                                      nn.BatchNorm3d(chans[0], **BN_KW), nn.ReLU(inplace=True))
            up = dict(kernel_size=2, stride=2, padding=0, bias=False)
        body = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            body += [nn.ConvTranspose3d(cin, cout, **up), nn.BatchNorm3d(cout, **BN_KW), nn.ReLU(inplace=True)]
        body.append(nn.ConvTranspose3d(chans[-1], 1, **up))
        self.body = nn.Sequential(*body)
        self.output_activation = output_activation or DEFAULT_OUTPUT[arch]
        if self.output_activation not in ("linear", "sigmoid"):
            raise ValueError(f"output activation must be 'linear' or 'sigmoid', got {self.output_activation!r}")
        _init_weights(self, bn_gamma_std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.fc is not None:
            x = self.fc(z).view(z.shape[0], self.c0, 4, 4, 4)
        else:
            x = z.view(z.shape[0], self.latent_dim, 1, 1, 1)
        x = self.body(self.stem(x)).float()   # the output layer computes in float32 (as ours)
        return torch.sigmoid(x) if self.output_activation == "sigmoid" else x


class Discriminator(nn.Module):
    """Voxel grids ``(N, 1, R, R, R)`` → one float32 logit per grid, ``(N, 1)``."""

    def __init__(self, arch: str = "rasgan64", width: float = 1.0, resolution: int | None = None,
                 latent_dim: int = LATENT_DIM, **_ignored):
        super().__init__()
        r = check_config(arch, width, resolution)
        self.arch, self.resolution = arch, r
        layers, cin = [], 1
        if arch == "rasgan64":
            n = int(math.log2(r // 4))
            for i in range(n):   # Keras k4 s2 "same" == padding 1: R -> R/2
                cout = channels(64 * 2**i, width)
                layers.append(nn.Conv3d(cin, cout, 4, stride=2, padding=1))
                if i > 0:
                    layers.append(nn.BatchNorm3d(cout, **BN_KW))
                layers.append(nn.LeakyReLU(0.2, inplace=True))
                cin = cout
            self.features = nn.Sequential(*layers)
            self.logit = nn.Linear(cin * 4 * 4 * 4, 1)
        else:
            size, i = r, 0
            while size > 1:   # k3 s2 valid: 32 -> 15 -> 7 -> 3 -> 1
                cout = channels(64 * 2**i, width)
                layers += [nn.Conv3d(cin, cout, 3, stride=2, bias=False), nn.BatchNorm3d(cout, **BN_KW),
                           nn.LeakyReLU(0.2, inplace=True)]
                cin, size, i = cout, (size - 3) // 2 + 1, i + 1
            self.features = nn.Sequential(*layers)
            self.logit = nn.Conv3d(cin, 1, 1, bias=False)
        _init_weights(self, bn_gamma_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.arch == "rasgan64":
            # Keras flattens channels-last (D, H, W, C); the order does not change the cost
            x = torch.flatten(x, 1)
        with _no_autocast(x.device.type):   # the logit layer computes in float32 (as ours)
            return torch.flatten(self.logit(x.float()), 1)


def _no_autocast(device_type: str):
    return torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) \
        else contextlib.nullcontext()


def build_models(arch: str = "rasgan64", width: float = 1.0, resolution: int | None = None,
                 output_activation: str | None = None):
    return Generator(arch, width, resolution, output_activation), Discriminator(arch, width, resolution)


def count_params(module: nn.Module) -> int:
    """Parameters plus BatchNorm running statistics — what Keras' ``count_params()`` counts
    (its moving mean/variance are non-trainable weights); ``num_batches_tracked`` is left out."""
    n = sum(p.numel() for p in module.parameters())
    return n + sum(b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var")))


# ---------------------------------------------------------------------------------------- loss / step

def rasgan(real_logits: torch.Tensor, fake_logits: torch.Tensor):
    """Relativistic average standard GAN, softplus form (as ``tf3dgan.models.losses.rasgan``)."""
    real, fake = real_logits.float(), fake_logits.float()
    r = real - fake.mean()
    f = fake - real.mean()
    d_loss = F.softplus(-r).mean() + F.softplus(f).mean()
    g_loss = F.softplus(-f).mean() + F.softplus(r).mean()
    return d_loss, g_loss


def _adam(params, lr: float, impl: str):
    kw = dict(lr=lr, betas=(0.5, 0.999), eps=ADAM_EPS)
    if impl == "fused":
        kw["fused"] = True
    elif impl == "foreach":
        kw["foreach"] = True
    elif impl == "loop":
        kw["foreach"] = False
    return torch.optim.Adam(params, **kw)


class TorchGANStep:
    """The train step: D update, then G update on a fresh real batch (D always trained)."""

    def __init__(self, arch: str = "rasgan64", batch: int = 8, width: float = 1.0, resolution: int | None = None,
                 precision: str = "float32", compile: bool = False, device: str = "cpu", seed: int = 0,
                 adam: str = "auto", pool: int | None = None, channels_last: bool = False):
        precision = _PRECISION_ALIASES.get(precision, precision)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.precision, self.batch = precision, int(batch)
        self.G, self.D = (m.to(self.device).train() for m in build_models(arch, width, resolution))
        self.channels_last = bool(channels_last)
        if self.channels_last:   # NDHWC storage of the same NCDHW tensors (oneDNN's preferred layout)
            self.G.to(memory_format=torch.channels_last_3d)
            self.D.to(memory_format=torch.channels_last_3d)
        self.resolution, self.latent_dim = self.G.resolution, self.G.latent_dim
        if adam == "auto":   # fused Adam exists for CPU and CUDA in PyTorch >= 2.4
            adam = "fused" if _fused_adam_ok(self.device) else "foreach"
        self.adam = adam
        self.opt_g = _adam(self.G.parameters(), G_LR, adam)
        self.opt_d = _adam(self.D.parameters(), D_LR, adam)
        self.g_fn = torch.compile(self.G) if compile else self.G
        self.d_fn = torch.compile(self.D) if compile else self.D
        self.compiled = bool(compile)
        # real data: a pool of binary grids (boxy furniture if tf3dgan is importable, else random blobs)
        n = max(self.batch, pool or self.batch)
        self.real_pool = _real_grids(n, self.resolution, seed).to(self.device)
        if self.channels_last:
            self.real_pool = self.real_pool.to(memory_format=torch.channels_last_3d)

    def autocast(self):
        if self.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _real_batch(self) -> torch.Tensor:
        idx = torch.randperm(self.real_pool.shape[0], device=self.device)[: self.batch]
        return self.real_pool[idx]

    def _latent(self) -> torch.Tensor:
        return torch.randn(self.batch, self.latent_dim, device=self.device)

    def step(self):
        G, D = self.g_fn, self.d_fn
        # ---- D update
        real, z = self._real_batch(), self._latent()
        with self.autocast():
            with torch.no_grad():
                fake = G(z)                     # BN in training mode (statistics updated), no graph kept
            d_loss, _ = rasgan(D(real), D(fake))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # ---- G update on a fresh real batch and fresh latents; D frozen (no weight gradients)
        real2, z2 = self._real_batch(), self._latent()
        self.D.requires_grad_(False)
        try:
            with self.autocast():
                fake2 = G(z2)
                _, g_loss = rasgan(D(real2), D(fake2))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        return d_loss.detach(), g_loss.detach()

    def timed_step(self) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        d_loss, g_loss = self.step()
        d, g = float(d_loss), float(g_loss)     # a host read: the step has finished
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0, d, g


def _fused_adam_ok(device: torch.device) -> bool:
    try:
        p = nn.Parameter(torch.zeros(2, device=device))
        opt = torch.optim.Adam([p], fused=True)
        p.grad = torch.ones_like(p)
        opt.step()
        return True
    except Exception:   # older PyTorch: fused is CUDA-only
        return False


def _real_grids(n: int, resolution: int, seed: int) -> torch.Tensor:
    try:
        from tf3dgan.data import synthetic  # NumPy only (no TensorFlow / Keras)
        grids = torch.from_numpy(synthetic.make_shapes("furniture", n, resolution, seed).astype("float32"))
    except Exception:
        g = torch.Generator().manual_seed(seed)
        grids = (torch.rand(n, resolution, resolution, resolution, generator=g) > 0.7).float()
    return grids.reshape(n, 1, resolution, resolution, resolution).contiguous()


# ---------------------------------------------------------------------------------------- FLOPs, device

def step_flops(arch: str, width: float, resolution: int, batch: int) -> int:
    """``tf3dgan.perf.benchmark.step_flops`` of the Keras pair (layers built from shapes only).

    Imports Keras; the script sets its backend to ``torch`` first, so TensorFlow is not loaded
    into the timed process (TensorFlow and PyTorch in one process abort on an LLVM clash)."""
    from tf3dgan.models.networks import Discriminator as KD
    from tf3dgan.models.networks import Generator as KG
    from tf3dgan.models.networks import make_spec
    from tf3dgan.perf.benchmark import step_flops as keras_step_flops

    spec = make_spec(arch, width, resolution).to_dict()
    return int(keras_step_flops(KG(**spec), KD(**spec), batch))


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    from tf3dgan.perf.benchmark import cpu_name  # the format of tools/bench.py's "device"

    return cpu_name()



# ---------------------------------------------------------------------------------------- bench

def bench(arch: str = "rasgan64", batch: int = 8, precision: str = "float32", compile: bool = False,
          width: float = 1.0, resolution: int | None = None, steps: int = 10, warmup: int = 2,
          device: str = "cpu", seed: int = 0, adam: str = "auto", flop: int | None = None,
          peak_tflops: float | None = None, channels_last: bool = False) -> dict:
    """Time ``steps`` single train steps after ``warmup`` untimed ones; the keys of ``tools/bench.py --json``."""
    from tf3dgan.perf.benchmark import loadavg, timing_fields  # Keras on its torch backend (set by main / the caller)

    resolution = check_config(arch, width, resolution)
    load_before = loadavg()
    runner = TorchGANStep(arch, batch, width, resolution, precision, compile, device, seed, adam,
                          channels_last=channels_last)
    for _ in range(warmup):
        runner.timed_step()
    times, last = [], None
    for _ in range(steps):
        t, d, g = runner.timed_step()
        times.append(t)
        last = (d, g)
    if flop is None:
        flop = step_flops(arch, width, resolution, batch)
    try:
        import keras
        keras_version = keras.__version__
    except Exception:
        keras_version = None
    result = {
        "backend": "torch", "arch": arch, "batch": int(batch), "precision": runner.precision,
        "xla": False, "compile": runner.compiled, "mode": "torch.compile" if runner.compiled else "eager",
        "autocast": runner.precision == "bfloat16", "steps_per_call": 1, "width": float(width),
        "resolution": resolution, "loss": "rasgan",
        **timing_fields(times, 1, batch, flop, peak_tflops), "warmup_calls": int(warmup), "trace_count": None,
        "d_loss": last[0], "g_loss": last[1],
        "device": device_description(runner.device), "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "adam": runner.adam, "channels_last": runner.channels_last,
        "tf_version": None, "keras_version": keras_version,
        "loadavg_before": load_before, "loadavg_after": loadavg(),
    }
    del runner
    return result


def config_label(r: dict) -> str:
    return (f"{r['arch']} {r['resolution']}³ w{r['width']:g} b{r['batch']} {r['precision']} "
            f"torch {r['mode']}" + (" channels_last" if r.get("channels_last") else ""))


def format_row(r) -> str:
    """``tools/bench.py``'s table row (``tf3dgan.perf.benchmark.format_row``) with this script's labels."""
    from tf3dgan.perf.benchmark import format_row as bench_row

    return bench_row(r, label=config_label, first_width=62)


# ---------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Time the PyTorch reference GAN train step (D update + G update, D "
                                            "always trained; median of single steps, analytic FLOP/s).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="rasgan64", choices=ARCHS)
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[8], help="batch size(s)")
    p.add_argument("--precision", nargs="+", default=["float32"], choices=sorted(_PRECISION_ALIASES),
                   help="float32, or bfloat16 (= bf16 = mixed_bfloat16: torch.autocast bfloat16)")
    p.add_argument("--compile", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                   help="torch.compile G and D: --compile (= on), --compile both")
    p.add_argument("--width", type=float, default=1.0, help="channel-width multiplier")
    p.add_argument("--resolution", type=int, default=None, help="grid size [default: the architecture's native one]")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation included)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads [default: all logical cores, os.cpu_count()]")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--adam", default="auto", choices=("auto", "fused", "foreach", "loop"),
                   help="Adam implementation (auto: fused where PyTorch has it)")
    p.add_argument("--channels-last", action="store_true",
                   help="store activations and weights channels-last (torch.channels_last_3d); default: NCDHW")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s, for %% of peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per configuration instead of the table")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolution = check_config(args.arch, args.width, args.resolution)
    except ValueError as e:
        parser.error(str(e))
    for name, values, low in (("--batch", args.batch, 1), ("--steps", [args.steps], 1), ("--warmup", [args.warmup], 0)):
        if any(v < low for v in values):
            parser.error(f"{name} must be >= {low}")
    if args.compile != "off" and args.warmup < 1:
        parser.error("--compile needs --warmup >= 1 (the first step compiles)")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    # Keras only counts FLOPs here, on its torch backend: TensorFlow must stay out of this process (it
    # would share the cores, and its LLVM clashes with PyTorch's: "LLVM ERROR: inconsistency in registered
    # CommandLine options" aborts the first optimizer step)
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    precisions = list(dict.fromkeys(_PRECISION_ALIASES[p] for p in args.precision))
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    results = []
    if not args.json:
        from tf3dgan.perf.benchmark import TABLE_HEADER

        print(format_row(TABLE_HEADER), flush=True)
    for b in args.batch:
        flop = step_flops(args.arch, args.width, resolution, b)
        for prec in precisions:
            for comp in compiles:
                r = bench(args.arch, b, prec, comp, args.width, resolution, args.steps, args.warmup, args.device,
                          args.seed, args.adam, flop, args.peak_tflops, args.channels_last)
                results.append(r)
                print(json.dumps(r) if args.json else format_row(r), flush=True)
    r = results[0]
    summary = (f"measured: median of {args.steps} timed step(s) (D + G update, D always trained, rasgan loss) "
               f"after {args.warmup} untimed warm-up step(s), per configuration; {r['arch']} {r['resolution']}³ "
               f"width {r['width']:g}; on {r['device']}; PyTorch {r['torch_version']}, {r['threads']} threads, "
               f"Adam {r['adam']}; 1-min load average {r['loadavg_before']} before, {results[-1]['loadavg_after']} after")
    print(summary, file=sys.stderr if args.json else sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

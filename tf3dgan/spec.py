"""The architecture spec (what ``config.json`` stores as ``"model"``), without Keras.

:func:`make_spec` validates the model flags and fills in an architecture's defaults; the tools
call it before TensorFlow loads, so a bad ``--width`` or ``--resolution`` answers at once.
:mod:`tf3dgan.models.networks` builds the networks from an :class:`ArchSpec`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tf3dgan.choices import ARCHS, D_NORMS, INITS, OUTPUT_ACTIVATIONS

LATENT_DIM = 200
_NATIVE_RESOLUTION = {"rasgan64": 64, "3dgan32": 32}
_DEFAULT_OUTPUT = {"rasgan64": "linear", "3dgan32": "sigmoid"}
_DEFAULT_INIT = {"rasgan64": "normal", "3dgan32": "pytorch"}   # each architecture's seed's


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a generator/discriminator pair (stored in config.json)."""

    arch: str = "rasgan64"
    width: float = 1.0
    resolution: int = 64
    output_activation: str = "linear"
    latent_dim: int = LATENT_DIM
    init: str = "normal"        # weight initialisation (choices.INITS); only a new run's weights depend on it
    data_scale: float = 1.0     # what an occupied voxel is when D sees it (64-3D-RaSGan.py: 255); G's raw output
    #                             has that scale, the models' inputs and outputs are on the 0..1 scale
    d_norm: str = "batch"       # D's normalisation (choices.D_NORMS)
    latent_std: float = 1.0     # G sees z · latent_std for z ~ N(0, 1): SomTambe's 3D-GAN draws z ~ N(0, 0.33)
    mbstd: int = 0              # D's minibatch standard deviation over groups of this many grids (0: none)

    def to_dict(self) -> dict:
        return asdict(self)


def make_spec(arch: str = "rasgan64", width: float = 1.0, resolution: int | None = None,
              output_activation: str | None = None, latent_dim: int = LATENT_DIM, init: str | None = None,
              data_scale: float = 1.0, d_norm: str = "batch", latent_std: float = 1.0, mbstd: int = 0) -> ArchSpec:
    """Validate the options and fill in the architecture's defaults (``None``: the architecture's own)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if resolution is None:
        resolution = _NATIVE_RESOLUTION[arch]
    smallest = 8 if arch == "rasgan64" else 4
    if int(resolution) != resolution or resolution < smallest or int(resolution) & (int(resolution) - 1):
        raise ValueError(f"{arch}: resolution must be a power of two >= {smallest}, got {resolution}")
    resolution = int(resolution)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width}")
    if int(latent_dim) != latent_dim or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
    output_activation = output_activation or _DEFAULT_OUTPUT[arch]
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"output activation must be one of {', '.join(OUTPUT_ACTIVATIONS)}, got {output_activation!r}")
    init = init or _DEFAULT_INIT[arch]
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if d_norm not in D_NORMS:
        raise ValueError(f"D normalisation must be one of {', '.join(D_NORMS)}, got {d_norm!r}")
    if not (isinstance(data_scale, (int, float)) and math.isfinite(data_scale) and data_scale > 0):
        raise ValueError(f"data scale must be a positive number, got {data_scale}")
    if data_scale != 1 and output_activation != "linear":
        raise ValueError(f"data scale {data_scale:g} needs a linear output (a {output_activation} output cannot reach "
                         f"{data_scale:g}); give --output-activation linear")
    if not (isinstance(latent_std, (int, float)) and math.isfinite(latent_std) and latent_std > 0):
        raise ValueError(f"latent std must be a positive number, got {latent_std}")
    if int(mbstd) != mbstd or mbstd < 0 or mbstd == 1:
        raise ValueError(f"minibatch std group size must be 0 (off) or at least 2, got {mbstd}")
    return ArchSpec(arch, float(width), resolution, output_activation, int(latent_dim), init, float(data_scale), d_norm,
                    float(latent_std), int(mbstd))


def describe(spec) -> str:
    """A model in a few characters, for titles and log lines: ``rasgan64 32³ ×0.25``
    (the width only when it is not 1). ``spec``: an :class:`ArchSpec` or its dict."""
    s = spec if isinstance(spec, dict) else spec.to_dict()
    width = float(s["width"])
    return f"{s['arch']} {int(s['resolution'])}³" + ("" if width == 1.0 else f" ×{width:g}")

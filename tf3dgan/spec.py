"""The architecture spec (what ``config.json`` stores as ``"model"``), without Keras.

:func:`make_spec` validates the model flags and fills in an architecture's defaults; the tools
call it before TensorFlow loads, so a bad ``--width`` or ``--resolution`` answers at once.
:mod:`tf3dgan.models.networks` builds the networks from an :class:`ArchSpec`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tf3dgan.choices import ARCHS, OUTPUT_ACTIVATIONS

LATENT_DIM = 200
_NATIVE_RESOLUTION = {"rasgan64": 64, "3dgan32": 32}
_DEFAULT_OUTPUT = {"rasgan64": "linear", "3dgan32": "sigmoid"}


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a generator/discriminator pair (stored in config.json)."""

    arch: str = "rasgan64"
    width: float = 1.0
    resolution: int = 64
    output_activation: str = "linear"
    latent_dim: int = LATENT_DIM

    def to_dict(self) -> dict:
        return asdict(self)


def make_spec(arch: str = "rasgan64", width: float = 1.0, resolution: int | None = None,
              output_activation: str | None = None, latent_dim: int = LATENT_DIM) -> ArchSpec:
    """Validate the options and fill in the architecture's defaults."""
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
        raise ValueError(f"output activation must be 'linear' or 'sigmoid', got {output_activation!r}")
    return ArchSpec(arch, float(width), resolution, output_activation, int(latent_dim))


def describe(spec) -> str:
    """A model in a few characters, for titles and log lines: ``rasgan64 32³ ×0.25``
    (the width only when it is not 1). ``spec``: an :class:`ArchSpec` or its dict."""
    s = spec if isinstance(spec, dict) else spec.to_dict()
    width = float(s["width"])
    return f"{s['arch']} {int(s['resolution'])}³" + ("" if width == 1.0 else f" ×{width:g}")

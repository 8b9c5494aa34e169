"""``from tf3dgan.fit import TrainConfig, fit``: the public entry point to training (kept from the flat layout;
the code is in :mod:`tf3dgan.training.loop` and :mod:`tf3dgan.training.plan`)."""
from tf3dgan.training.loop import fit
from tf3dgan.training.plan import TrainConfig

__all__ = ["TrainConfig", "fit"]

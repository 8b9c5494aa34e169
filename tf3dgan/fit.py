"""``from tf3dgan.fit import TrainConfig, fit``: the public entry point to training (kept from the flat layout;
the run flow is :mod:`tf3dgan.training.plan` → :mod:`tf3dgan.training.build` → :mod:`tf3dgan.training.loop`,
writing through :mod:`tf3dgan.training.outputs`)."""
from tf3dgan.training.loop import fit
from tf3dgan.training.plan import TrainConfig

__all__ = ["TrainConfig", "fit"]

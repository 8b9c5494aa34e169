"""``from tf3dgan.runs import load_generator``: the run folder's public functions (kept from the flat layout; the
code is in :mod:`tf3dgan.training.runs`)."""
from tf3dgan.training.runs import (
                                   export_generator,
                                   load_checkpoint,
                                   load_generator,
                                   read_config,
                                   sample_files,
                                   saved_epochs,
                                   threshold_for,
)

__all__ = ["export_generator", "load_checkpoint", "load_generator", "read_config", "sample_files", "saved_epochs",
           "threshold_for"]

"""The networks (:mod:`.networks`: ``Generator``, ``Discriminator`` from an architecture spec), the GAN objectives as
pure functions of D's logits (:mod:`.losses`) and the phase-form transposed convolution (:mod:`.phase_conv`).
Everything here is ``keras.layers`` / ``keras.ops``: it runs on TensorFlow and JAX."""
from tf3dgan.models.networks import Discriminator, Generator, build_from_config, build_models

__all__ = ["Discriminator", "Generator", "build_from_config", "build_models"]

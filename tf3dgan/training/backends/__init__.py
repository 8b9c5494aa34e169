"""Backend adapters of the one step algorithm: TensorFlow (:mod:`.tensorflow`) and JAX (:mod:`.jax`)."""

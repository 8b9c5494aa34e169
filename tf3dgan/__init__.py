"""tf3dgan: 3D voxel GANs (64-3D-RaSGAN and 3D-GAN) in TensorFlow / Keras 3."""

__version__ = "0.1.0"

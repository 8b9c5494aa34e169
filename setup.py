from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "tf3dgan" / "__init__.py").read_text(), version)

TOOLS = ["train", "bench", "download_data", "convert_data", "check_voxelizer", "convert_to_obj", "convert_to_graph", "evaluate",
         "train_classifier",
         "generate", "render_class_view"]

setup(
    name="tf3dgan",
    version=version["__version__"],
    description="3D voxel GANs (64-3D-RaSGAN, 3D-GAN) in TensorFlow / Keras 3",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tf3dgan", "tf3dgan.*"]) + ["tf3dgan.tools"],
    package_data={"tf3dgan.metrics": ["weights/*.npz", "weights/*.json"],   # the shipped classifier
                  "tf3dgan.pretrained": ["*.npz", "*.json"]},                   # the shipped generators
    package_dir={"tf3dgan": "tf3dgan", "tf3dgan.tools": "tools"},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.5",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tensorboard>=2.16",
        "trimesh>=4",
        "scikit-image>=0.21",
        "scikit-learn>=1.3",
    ],
    extras_require={
        "cuda": ["tensorflow[and-cuda]>=2.16"],
        "jax": ["jax>=0.5", "jaxlib>=0.5"],
        "test": ["pytest>=7", "jax>=0.5", "jaxlib>=0.5", "ruff>=0.5"],
    },
    entry_points={"console_scripts": [f"tf3dgan-{t.replace('_', '-')}=tf3dgan.tools.{t}:main" for t in TOOLS]},
)

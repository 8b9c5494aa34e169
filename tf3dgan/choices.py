"""The names a user can choose on the command line, in one dependency-free module.

The tools build their ``choices=`` lists from here, so ``--help`` and a bad flag answer before
TensorFlow or Keras is imported; the modules that implement each choice import the same tuples
(and a test checks that every name here has an implementation).
"""

ARCHS = ("rasgan64", "3dgan32")
#: minimax: the 3D-GAN game with the non-saturating G loss, as both 3D-GAN seeds ran it
OBJECTIVES = ("rasgan", "rsgan", "minimax", "minimax-saturating", "wgan-gp")
D_RULES = ("ratio", "accuracy", "always")
#: when the accuracy rule decides: on this step's D-phase scores before D's update, D trained when < 0.8
#: (SomTambe's main.py), or on the previous step's, D trained when <= 0.8 (tf3dgan 0.1)
ACCURACY_TIMINGS = ("current", "previous")
#: the D loss the ratio rule smooths on a step that skips D: the training-mode loss, or (64-3D-RaSGan.py's
#: d_loss2) the loss with D's BatchNorm in inference mode
RULE_LOSSES = ("train", "eval")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")       # multiworker: TensorFlow only
JAX_STRATEGIES = ("auto", "one", "mirrored")
IMPLEMENTATIONS = ("native", "phase")                         # G's transposed convolutions
OUTPUT_ACTIVATIONS = ("linear", "sigmoid", "tanh")
#: weight initialisation: "normal" (the TF1 seeds': N(0, 0.02) weights, zero biases, G's BN γ ~ N(1, 0.02)) or
#: "pytorch" (PyTorch's layer defaults, which SomTambe's 3D-GAN seed keeps)
INITS = ("normal", "pytorch")
#: D's normalisation: BatchNorm (every seed but one) or none (64-3D-IWGan.py's critic)
D_NORMS = ("batch", "none")
#: --augment's operations (DiffAugment for voxels, applied to every grid D sees, real and generated): a random
#: shift by up to 1/8 of the grid on each axis, a mirror image about the grid's own left-right symmetry plane,
#: a zeroed cube of half the grid's side
AUGMENTS = ("translation", "mirror", "cutout")
GRAPH_STYLES = ("scatter", "shaded")
#: 3D graph colour maps by the original's numbers (-c 0..7)
COLORMAPS = ("copper", "viridis", "plasma", "winter", "cool", "ocean", "inferno", "coolwarm")
#: (azimuth, elevation) in degrees: matplotlib's default 3D view
DEFAULT_VIEW = (-60.0, 30.0)
#: The original's occupancy threshold (linear-output generators, and grids of no run); sigmoid runs use 0.5
DEFAULT_THRESHOLD = 0.3
#: the generators shipped in the package (tf3dgan/pretrained/<name>.npz): ``generate.py --pretrained NAME``
PRETRAINED = ("chair32",)
BACKENDS = {"tensorflow": "tf", "jax": "jax"}                 # Keras backend -> the short name of bench --backend


def parse_augment(text: str | None) -> tuple[str, ...]:
    """``--augment``'s value: ``"translation,cutout"`` -> ``("translation", "cutout")``, in ``AUGMENTS`` order;
    ``""``/None -> ``()``.  An unknown name is a ValueError listing the names."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    bad = [n for n in names if n not in AUGMENTS]
    if bad:
        raise ValueError(f"unknown --augment operation {bad[0]!r}; give a comma-separated list of "
                         f"{', '.join(AUGMENTS)}")
    return tuple(a for a in AUGMENTS if a in names)

"""The names a user can choose on the command line, in one dependency-free module.

The tools build their ``choices=`` lists from here, so ``--help`` and a bad flag answer before
TensorFlow or Keras is imported; the modules that implement each choice import the same tuples
(and a test checks that every name here has an implementation).
"""

ARCHS = ("rasgan64", "3dgan32")
OBJECTIVES = ("rasgan", "rsgan", "minimax", "sgan", "wgan-gp")
D_RULES = ("ratio", "accuracy", "always")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")       # multiworker: TensorFlow only
JAX_STRATEGIES = ("auto", "one", "mirrored")
IMPLEMENTATIONS = ("native", "phase")                         # G's transposed convolutions
OUTPUT_ACTIVATIONS = ("linear", "sigmoid")
GRAPH_STYLES = ("scatter", "shaded")
#: 3D graph colour maps by the original's numbers (-c 0..7)
COLORMAPS = ("copper", "viridis", "plasma", "winter", "cool", "ocean", "inferno", "coolwarm")
#: (azimuth, elevation) in degrees: matplotlib's default 3D view
DEFAULT_VIEW = (-60.0, 30.0)
#: The original's occupancy threshold (linear-output generators, and grids of no run); sigmoid runs use 0.5
DEFAULT_THRESHOLD = 0.3
BACKENDS = {"tensorflow": "tf", "jax": "jax"}                 # Keras backend -> the short name of bench --backend

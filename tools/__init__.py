"""Command-line front-ends (installed as the ``tf3dgan.tools`` package and as console scripts)."""

"""A newcomer's first minutes: every tool's ``--help`` and a wrong flag, path or run answer at once.

Each case runs ``python -X importtime tools/<tool>.py ...`` as a user would; the import log shows
whether TensorFlow, Keras or JAX were loaded (they must not be: importing TensorFlow alone takes
seconds).  The cases run in a few parallel subprocesses, each held to < 5 s of wall time.  The
last tests check that every name a user can choose (``tf3dgan.choices``) has an implementation.
"""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import REPO, tool_env

from tf3dgan import choices

TOOLS = ("train", "bench", "download_data", "convert_data", "check_voxelizer", "convert_to_obj",
         "convert_to_graph", "generate", "render_class_view")
HEAVY = {"tensorflow", "keras", "jax", "torch"}
LIMIT_S = 5.0


def _cases(tmp: Path) -> dict[str, tuple]:
    """id -> (tool, args, kind, text): kind "help" (exit 0, usage on stdout), "error" (exactly one
    ``error:`` line, exit 2) or "usage" (argparse's usage + ``<tool>.py: error:`` line, exit 2);
    ``text`` must appear in that line."""
    afile = tmp / "notes.txt"                    # a regular file where a folder is expected
    weights = tmp / "w.npz"                      # passes generate's up-front checks (TF never starts here)
    mesh = tmp / "tri.obj"
    cases = {f"{t}-help": (t, ["--help"], "help", "usage:") for t in TOOLS}
    cases.update({
        "bench-bad-loss": ("bench", ["--loss", "nosuch"], "usage", "invalid choice: 'nosuch'"),
        "bench-bad-arch": ("bench", ["--arch", "nosuch"], "usage", "invalid choice: 'nosuch'"),
        "bench-resolution": ("bench", ["--resolution", "12"], "usage", "power of two"),
        "bench-width": ("bench", ["--width", "0"], "usage", "width must be a positive number"),
        "bench-batch": ("bench", ["-b", "8", "0"], "usage", "--batch must be >= 1"),
        "bench-profile-file": ("bench", ["--profile", afile], "usage", "is not a folder"),
        "bench-profile-below-file": ("bench", ["--profile", afile / "prof"], "usage",
                                     f"{afile} is a file, not a folder"),
        "bench-compare-one": ("bench", ["--compare", "-b", "8"], "usage", "--compare needs at least two"),
        "generate-no-source": ("generate", [], "error", "-n RUN"),
        "generate-missing-run": ("generate", ["-n", "missing-run", "--out", tmp], "error",
                                 "missing-run: no such run folder"),
        "generate-bad-run-name": ("generate", ["-n", "../up"], "error", "plain folder name"),
        "generate-missing-weights": ("generate", ["--weights", tmp / "nosuch.npz"], "error",
                                     "nosuch.npz: no such weights file"),
        "generate-run-without-weights": ("generate", ["-n", "empty", "--out", tmp], "error", "no such weights file"),
        "generate-missing-epoch": ("generate", ["-n", "empty", "--out", tmp, "-le", "3"], "error",
                                   "no checkpoint of epoch 3"),
        "generate-count": ("generate", ["--weights", weights, "--count", "0"], "error",
                           "--count must be at least 1"),
        "generate-dest-below-file": ("generate", ["--weights", weights, "--dest", afile / "out"], "error",
                                     f"cannot write into {afile / 'out'}: {afile} is a file, not a folder"),
        "generate-dest-is-file": ("generate", ["--weights", weights, "--dest", afile], "error",
                                  "it is a file, not a folder"),
        "generate-bad-colormap": ("generate", ["-n", "x", "-c", "9"], "usage", "invalid choice: 9"),
        "generate-bad-count-type": ("generate", ["-n", "x", "--count", "many"], "usage", "invalid int value"),
        "render-missing-model": ("render_class_view", ["-m", tmp / "nosuch.obj"], "error", "no such model file"),
        "render-unknown-kind": ("render_class_view", ["-m", afile], "error", "cannot render '.txt' files"),
        "render-output-below-file": ("render_class_view", ["-m", mesh, "-o", afile / "x.png"], "error",
                                     f"cannot write into {afile}: it is a file, not a folder"),
        "render-output-not-png": ("render_class_view", ["-m", mesh, "-o", tmp / "x.jpg"], "error", ".png"),
        "render-missing-views": ("render_class_view", ["-m", mesh, "--views", tmp / "nosuch.txt"], "error",
                                 "no such views file"),
        "render-samples": ("render_class_view", ["-m", mesh, "--samples", "0"], "error", "--samples must be"),
        "render-missing-blender": ("render_class_view", ["-m", mesh, "-o", tmp / "x.png", "-b", tmp / "blender"],
                                   "error", "Blender not found"),
        "render-bad-engine": ("render_class_view", ["-m", mesh, "--engine", "nosuch"], "usage", "invalid choice"),
    })
    return cases


def _run(tool: str, args: list, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-X", "importtime", str(REPO / "tools" / f"{tool}.py"), *map(str, args)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd, env=tool_env())
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast")
    (tmp / "notes.txt").write_text("not a folder\n")
    (tmp / "w.npz").write_bytes(b"PK\x03\x04 never read: the run stops before TensorFlow starts")
    (tmp / "tri.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp / "empty").mkdir()
    cases = _cases(tmp)
    workers = 2   # two at a time (the --help cases first): each is timed by the wall clock
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(_run, t, args, tmp) for key, (t, args, _, _) in cases.items()}
        return {key: (cases[key], *f.result()) for key, f in futures.items()}


def _imported(stderr: str) -> set[str]:
    """Top-level packages in ``-X importtime``'s log."""
    names = (line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:"))
    return {n.split(".")[0] for n in names}


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except (AttributeError, OSError):
        return "unknown"


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


CASE_IDS = sorted(_cases(Path("/tmp")))


@pytest.mark.parametrize("case", CASE_IDS)
def test_answers_at_once(results, case):
    (tool, args, kind, text), proc, seconds = results[case]
    out = _messages(proc.stderr)
    where = (f"{tool}.py {' '.join(map(str, args))}: rc {proc.returncode}, {seconds:.1f} s (load average "
             f"{_load()})\n" + "\n".join(out[-30:]))
    assert seconds < LIMIT_S, where
    assert not _imported(proc.stderr) & HEAVY, (sorted(_imported(proc.stderr) & HEAVY), where)
    assert not any("Traceback" in line for line in out), where
    if kind == "help":
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), where
        return
    assert proc.returncode == 2, where
    if kind == "error":
        errors = [line for line in out if line.startswith("error:")]
        assert len(errors) == 1 and text in errors[0], where
        assert len(out) == 1, where   # nothing but that line
    else:
        assert out[0].startswith("usage:") and out[-1].startswith(f"{tool}.py: error:") and text in out[-1], where


# ------------------------------------------------------------------ unwritable places that cannot be made here

def _read_only(monkeypatch, below: Path) -> None:
    """Make ``below`` and everything in it look like a read-only file system (as root, chmod
    does not stop writes, so the check's view of the system is what can be simulated)."""
    real_access, real_statvfs = os.access, os.statvfs

    class ReadOnly:
        def __init__(self, st):
            self._st = st

        def __getattr__(self, name):
            return getattr(self._st, name)

        @property
        def f_flag(self):
            return self._st.f_flag | os.ST_RDONLY

    def inside(p) -> bool:
        p = Path(p).resolve()
        return p == below or below in p.parents

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if inside(p) and mode & os.W_OK
                        else real_access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real_statvfs(p)) if inside(p) else real_statvfs(p))


def test_check_output_folder(tmp_path, monkeypatch):
    from tf3dgan.atomic import check_output_folder
    from tf3dgan.errors import WriteError

    check_output_folder(tmp_path / "new" / "deeper")          # not there yet: its first existing parent is
    (tmp_path / "f").write_text("x")
    with pytest.raises(WriteError, match=r"f is a file, not a folder"):
        check_output_folder(tmp_path / "f" / "out")
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False)   # e.g. another user's folder
    with pytest.raises(WriteError, match=r"is not writable \(no permission to write there\); choose a writable"):
        check_output_folder(tmp_path / "new")
    _read_only(monkeypatch, tmp_path.resolve())
    with pytest.raises(WriteError, match=r"is not writable \(read-only file system\)"):
        check_output_folder(tmp_path / "new")


def test_read_only_outputs_of_the_tools_in_process(tmp_path, monkeypatch, capsys):
    from tf3dgan.tools import bench, generate, render_class_view

    weights = tmp_path / "w.npz"
    weights.write_bytes(b"PK\x03\x04 never read")
    mesh = tmp_path / "tri.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro.resolve())
    assert generate.main(["--weights", str(weights), "--dest", str(ro / "gen")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write into {ro / 'gen'}: {ro} is not writable "
                                                   "(read-only file system)"), err
    assert render_class_view.main(["-m", str(mesh), "-o", str(ro / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(read-only file system)" in err, err
    with pytest.raises(SystemExit) as exc:
        bench.main(["--profile", str(ro / "prof")])
    assert exc.value.code == 2 and "--profile: cannot write into" in capsys.readouterr().err
    assert list(ro.iterdir()) == []


# ------------------------------------------------------------------ every user-facing name is implemented

@pytest.fixture(scope="module")
def jax_check():
    """JAX's strategies, checked in a KERAS_BACKEND=jax child while this process checks TensorFlow's."""
    code = ("from tf3dgan import choices\n"
            "from tf3dgan.training.backends import jax as j\n"
            "from tf3dgan.errors import Tf3dganError\n"
            "print(sorted(j.STRATEGIES) == sorted(choices.JAX_STRATEGIES))\n"
            "print([type(j.make_distribution(n)).__name__ for n in choices.JAX_STRATEGIES])\n"
            "try:\n    j.make_distribution('multiworker')\nexcept Tf3dganError as e:\n    print('refused:', e)\n")
    env = dict(tool_env(), KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_every_choice_has_an_implementation(jax_check, tmp_path, monkeypatch):
    import keras
    import numpy as np

    from tf3dgan import spec
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.models import losses, phase_conv
    from tf3dgan.models import networks as models
    from tf3dgan.outputs import plots
    from tf3dgan.outputs.mesh import MESH_KINDS
    from tf3dgan.outputs.sampling import INTERPOLATIONS
    from tf3dgan.tools import bench, generate
    from tf3dgan.training import trainer as trainer_base
    from tf3dgan.training.backends import tensorflow as training

    assert set(choices.OBJECTIVES) == set(losses.OBJECTIVES)
    for name in choices.OBJECTIVES:
        objective = losses.get_objective(name)
        assert objective.name == name and objective.default_d_rule in choices.D_RULES
    for name in choices.D_RULES:
        assert trainer_base.check_settings("rasgan", name, "float32", 8, 32)[1] == name
    assert set(choices.PRECISIONS) == set(trainer_base.PRECISIONS)
    for name in choices.PRECISIONS:
        assert keras.dtype_policies.get(name).name == name
        trainer_base.check_settings("rasgan", None, name, 8, 32)
    smallest = {"rasgan64": 8, "3dgan32": 4}
    assert set(choices.ARCHS) == set(smallest)
    for arch in choices.ARCHS:
        for act in choices.OUTPUT_ACTIVATIONS:
            s = spec.make_spec(arch, 1 / 32, smallest[arch], act)
            assert models.make_spec(arch, 1 / 32, smallest[arch], act) == s and s.output_activation == act
    for impl in choices.IMPLEMENTATIONS:   # every architecture and transposed-convolution form builds and runs
        assert impl in phase_conv.IMPLEMENTATIONS
        for arch in choices.ARCHS:
            g, d = models.build_models(arch, 1 / 32, smallest[arch], conv_transpose=impl)
            x = g(np.zeros((1, g.spec.latent_dim), np.float32), training=False)
            assert tuple(x.shape) == (1,) + (smallest[arch],) * 3 + (1,)
            assert tuple(d(x, training=False).shape)[0] == 1
    assert set(choices.STRATEGIES) == set(training.STRATEGIES)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name in choices.STRATEGIES:
        if name == "multiworker":
            with pytest.raises(Tf3dganError, match="TF_CONFIG"):
                training.make_strategy(name)
        else:
            training.make_strategy(name)
    with pytest.raises(Tf3dganError, match="must be one of"):
        training.make_strategy("nosuch")
    assert set(choices.GRAPH_STYLES) == set(plots.STYLES)
    grid = np.zeros((8, 8, 8), np.float32)
    grid[2:6, 2:6, 2:5] = 1
    for style in choices.GRAPH_STYLES:
        image = plots.voxel_graph_image(grid, style=style, size=64)
        assert image.ndim == 3 and image.std() > 0
    assert set(choices.BACKENDS) == {"tensorflow", "jax"} and keras.backend.backend() in choices.BACKENDS

    # the tools offer exactly these names
    flags = {a.dest: a.choices for a in bench.build_parser()._actions if a.choices}
    assert (list(flags["arch"]), list(flags["loss"]), list(flags["precision"])) == \
        (list(choices.ARCHS), list(choices.OBJECTIVES), list(choices.PRECISIONS))
    assert list(flags["conv_transpose"]) == list(choices.IMPLEMENTATIONS)
    assert sorted(flags["backend"]) == sorted(choices.BACKENDS.values())
    flags = {a.dest: a.choices for a in generate.build_parser()._actions if a.choices}
    assert generate.COLORMAPS is plots.COLORMAPS and list(flags["colormap"]) == list(range(len(plots.COLORMAPS)))
    assert list(flags["style"]) == list(choices.GRAPH_STYLES)
    assert list(flags["mesh"]) == list(MESH_KINDS) and list(flags["interpolation"]) == list(INTERPOLATIONS)

    out, err = jax_check.communicate(timeout=120)
    assert jax_check.returncode == 0, err[-3000:]
    same, kinds, refused = out.splitlines()
    assert same == "True" and kinds.startswith("['NoneType'") and refused.startswith("refused: --strategy multiworker")

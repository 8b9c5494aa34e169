"""tf3dgan.outputs.sampling, runs.load_generator and tools/generate.py on a tiny trained run."""
from __future__ import annotations

import errno
import os

import matplotlib.figure
import matplotlib.image as mpimg
import numpy as np
import pytest
import trimesh
from _cli import error_line, tool

from tf3dgan.outputs import sampling
from tf3dgan.training import runs


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run   # the shared tiny run (tests/conftest.py): run "g", checkpoints at epochs 2 and 4


def test_latents_and_interpolation():
    z = sampling.latents(5, 7, seed=3)
    assert z.shape == (5, 7) and z.dtype == np.float32
    assert np.array_equal(sampling.latents(2, 7, seed=3), z[:2])       # a prefix does not depend on count
    assert not np.allclose(sampling.latents(5, 7, seed=4), z)
    for mode in sampling.INTERPOLATIONS:
        path = sampling.interpolate(z[0], z[1], 6, mode)
        assert path.shape == (6, 7)
        np.testing.assert_allclose(path[0], z[0], atol=1e-6)
        np.testing.assert_allclose(path[-1], z[1], atol=1e-6)
    far = z[1] * np.linalg.norm(z[0]) / np.linalg.norm(z[1])
    norms = np.linalg.norm(sampling.interpolate(z[0], far, 5, "slerp"), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(z[0]), rtol=1e-3)   # slerp keeps the norm
    with pytest.raises(ValueError):
        sampling.interpolate(z[0], z[1], 1)


@pytest.mark.slow
def test_generate_batch_matches_the_library(run, tmp_path):
    proc = tool("generate", "-n", "g", "--out", run, "--count", "5", "--seed", "7", "--sheet", "--obj", "--binary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = run / "g" / "generated"
    grids = np.load(folder / "seed7_n5.npy")
    assert grids.shape == (5, 8, 8, 8) and grids.dtype == np.float32
    binary = np.load(folder / "seed7_n5_binary.npy")   # --binary: thresholded at the run's threshold, uint8 0/1
    assert binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 1}
    np.testing.assert_array_equal(binary, grids > runs.run_threshold(run / "g"))
    assert "seed7_n5_binary.npy" in proc.stdout
    generator, source = runs.load_generator(run / "g")
    assert source == runs.checkpoint_path(run / "g")
    z = np.load(folder / "seed7_n5_latents.npy")
    np.testing.assert_array_equal(z, sampling.latents(5, generator.spec.latent_dim, 7))
    np.testing.assert_allclose(grids, sampling.generate(generator, z), atol=1e-5)
    sheet = mpimg.imread(folder / "seed7_n5.png")
    assert sheet.std() > 0.01
    meshes = sorted(folder.glob("seed7_n5_*.obj"))
    assert meshes, proc.stdout
    for path in meshes:
        m = trimesh.load(path, force="mesh")
        assert len(m.faces) > 0
    # the same seed gives the same shapes, from the exported weights file too
    again = tool("generate", "--weights", run / "g" / runs.GENERATOR_WEIGHTS, "--dest", tmp_path, "--count", "5",
                 "--seed", "7")
    assert again.returncode == 0, again.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "seed7_n5.npy"), grids, atol=1e-5)


@pytest.mark.slow
def test_interpolation_and_epochs(run):
    proc = tool("generate", "-n", "g", "--out", run, "-le", "2", "--interpolate", "4", "--seed", "1",
                "--seed2", "5", "--sheet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = run / "g" / "generated"
    path = np.load(folder / "interp_seed1-5_k4.npy")
    assert path.shape == (4, 8, 8, 8)
    generator, source = runs.load_generator(run / "g", epoch=2)
    assert source.name == "ckpt-000002.npz"
    ends = [sampling.latents(1, generator.spec.latent_dim, s) for s in (1, 5)]
    np.testing.assert_allclose(path[0], sampling.generate(generator, ends[0])[0], atol=1e-5)
    np.testing.assert_allclose(path[-1], sampling.generate(generator, ends[1])[0], atol=1e-5)
    latest, _ = runs.load_generator(run / "g")
    assert not np.allclose(sampling.generate(latest, ends[0]), path[:1], atol=1e-4)   # epoch 2 is not epoch 4
    assert mpimg.imread(folder / "interp_seed1-5_k4.png").shape[1] > 2 * mpimg.imread(
        folder / "interp_seed1-5_k4.png").shape[0]


@pytest.mark.slow
def test_errors(run, tmp_path):
    assert "-n RUN" in error_line(tool("generate"))
    assert "no such run folder" in error_line(tool("generate", "-n", "ghost", "--out", run))
    assert "no checkpoint of epoch 3 (saved epochs: 2, 4)" in error_line(tool("generate", "-n", "g", "--out", run,
                                                                                "-le", "3"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    assert "bad.npz: corrupt or truncated checkpoint" in error_line(tool("generate", "--weights", bad))
    assert "--count must be at least 1" in error_line(tool("generate", "-n", "g", "--out", run, "--count", "0"))


def test_unwritable_dest_is_one_line(run, tmp_path, monkeypatch, capsys):
    """--dest that cannot be written: said before TensorFlow starts when the place itself is wrong (a file on
    the way), and as one line naming the file when a write fails later (read-only or full disk, simulated:
    as root chmod does not stop writes), with nothing half-written left behind."""
    from tf3dgan.tools import generate

    note = tmp_path / "note.txt"
    note.write_text("a file, not a folder")
    line = error_line(tool("generate", "-n", "g", "--out", run, "--dest", note / "gen", "--count", "2"))
    assert line == f"error: cannot write into {note / 'gen'}: {note} is a file, not a folder"

    def failing(code):
        def write(*args, **kwargs):
            raise OSError(code, os.strerror(code))
        return write

    dest = tmp_path / "gen"
    monkeypatch.setattr(np, "save", failing(errno.EROFS))
    assert generate.main(["-n", "g", "--out", str(run), "--dest", str(dest), "--count", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {dest / 'seed0_n2.npy'}: Read-only file system; choose a writable location\n"
    monkeypatch.undo()
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing(errno.ENOSPC))   # the --sheet PNG
    assert generate.main(["-n", "g", "--out", str(run), "--dest", str(dest), "--count", "2", "--sheet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {dest / 'seed0_n2.png'}: No space left on device (") and \
        err.endswith(" free on that disk); free some space and run again\n"), err
    assert sorted(p.name for p in dest.iterdir()) == ["seed0_n2.npy", "seed0_n2_latents.npy"]   # no temporaries


def test_generate_shapes_called_directly(run, tmp_path):
    """tf3dgan.outputs.generation.generate_shapes (what tools/generate.py calls): the files it says it wrote
    hold the generator's shapes, meshes and sheet; its checks answer before any work."""
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.outputs.generation import generate_shapes

    result = generate_shapes("g", out=run, dest=tmp_path / "gen", count=3, seed=11, sheet=True, obj=True,
                             colormap="copper", batch=2)
    assert result.grids == tmp_path / "gen" / "seed11_n3.npy" and result.shape == (3, 8, 8, 8)
    grids = np.load(result.grids)
    generator, source = runs.load_generator(run / "g")
    assert result.source == source and result.resolution == 8 and result.count == 3
    z = np.load(result.latents)
    np.testing.assert_array_equal(z, sampling.latents(3, generator.spec.latent_dim, 11))
    np.testing.assert_allclose(grids, sampling.generate(generator, z), atol=1e-5)
    assert result.threshold == runs.run_threshold(run / "g")
    assert mpimg.imread(result.sheet).std() > 0.01
    solid = [i for i, g in enumerate(grids) if (g > result.threshold).any()]
    assert result.empty == [i for i in range(3) if i not in solid]
    assert result.meshes == [tmp_path / "gen" / f"seed11_n3_{i}.obj" for i in solid]
    for path in result.meshes:
        assert len(trimesh.load(path, force="mesh").faces) > 0
    line = result.summary()
    assert line.startswith(f"generated 3 shapes of 8³ with {source} in ") and f"wrote {result.grids} (3, 8, 8, 8)" in line
    path = generate_shapes("g", out=run, dest=tmp_path / "path", interpolate=3, seed=2, seed2=4)
    assert path.grids.name == "interp_seed2-4_k3.npy" and path.sheet is None and not path.meshes
    ends = np.load(path.latents)[[0, -1]]
    np.testing.assert_allclose(ends, np.concatenate([sampling.latents(1, generator.spec.latent_dim, s) for s in (2, 4)]),
                               atol=1e-6)
    for kwargs, words in (({}, "-n RUN"), (dict(name="g", out=run, count=0), "--count must be at least 1"),
                          (dict(name="g", out=run, interpolate=1), "--interpolate must be at least 2"),
                          (dict(name="ghost", out=run), "no such run folder")):
        with pytest.raises(Tf3dganError, match=words):
            generate_shapes(**kwargs)

"""tools/render_class_view.py and tf3dgan.outputs.render: Blender renders of real ModelNet chairs, and one-line errors.

The render tests need Blender (apt-get install blender) and are skipped without it; the error tests do not.
"""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from _cli import FIXTURES, error_line, tool

from tf3dgan.data.binvox import read_raw
from tf3dgan.outputs.mesh import export_mesh, grid_to_mesh

CHAIR_RAW = FIXTURES / "chair" / "train" / "chair_0013.raw"    # binvox -d 64 of ModelNet10 chair_0013
needs_blender = pytest.mark.skipif(shutil.which("blender") is None,
                                   reason="Blender is not installed (apt-get install blender)")


@pytest.fixture(scope="module")
def chair_obj(tmp_path_factory):
    """A real chair mesh: the fixture grid as closed voxel faces, z-up, written as .obj."""
    path = tmp_path_factory.mktemp("mesh") / "chair_0013.obj"
    export_mesh(grid_to_mesh(read_raw(CHAIR_RAW).astype(np.float32), mesh="faces"), path)
    return path


def read_png(path):
    import matplotlib.image as mpimg

    im = mpimg.imread(str(path))
    assert im.ndim == 3 and im.shape[2] == 4, im.shape      # RGBA
    return im


def check_chair_image(path, size):
    im = read_png(path)
    assert im.shape[:2] == (size, size)
    alpha = im[..., 3].astype(np.float64)
    coverage = float((alpha > 0.5).mean())
    assert 0.02 < coverage < 0.8, coverage                   # the chair, on a transparent background
    assert alpha[0].max() == 0 and alpha[:, 0].max() == 0    # not cut off at the borders
    ys, xs = np.mgrid[0:size, 0:size]
    cy, cx = (alpha * ys).sum() / alpha.sum(), (alpha * xs).sum() / alpha.sum()
    assert abs(cy - (size - 1) / 2) < 0.15 * size and abs(cx - (size - 1) / 2) < 0.15 * size, (cy, cx)
    rgb = im[..., :3][alpha > 0.5]
    assert rgb.mean() > 0.15 and rgb.std() > 0.01            # lit and shaded, not black or flat
    return im


def fake_blender(path, body):
    """An executable Python script standing in for Blender."""
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(0o755)
    return path


def leftovers(folder, expected):
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


@needs_blender
def test_cycles_render_of_a_chair_mesh(chair_obj, tmp_path):
    out = tmp_path / "chair.png"
    proc = tool("render_class_view", "-m", chair_obj, "-o", out, "--resolution", 96, "--samples", 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout and "cycles" in proc.stdout
    im = check_chair_image(out, 96)
    # the colour asked for (default #8fb8de): bluish
    rgb = im[..., :3][im[..., 3] > 0.5].mean(0)
    assert rgb[2] > rgb[0], rgb
    assert leftovers(tmp_path, {"chair.png"}) == []


@needs_blender
def test_workbench_render_of_a_voxel_file(tmp_path):
    out = tmp_path / "wb.png"
    proc = tool("render_class_view", "-m", CHAIR_RAW, "-o", out, "--engine", "workbench", "--resolution", 96,
                "-a", 20, "-e", 15, "--color", "0.8,0.3,0.2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "workbench" in proc.stdout and "meshed" in proc.stdout
    im = check_chair_image(out, 96)
    rgb = im[..., :3][im[..., 3] > 0.5].mean(0)
    assert rgb[0] > rgb[2], rgb                               # red-brown, as asked


@needs_blender
def test_views_file_renders_each_view_in_one_run(chair_obj, tmp_path):
    views = tmp_path / "views.txt"
    views.write_text("# az el tilt dist\n\n0 20 0 2.0\n135, 40, 10, 2.5   # from behind\n")
    proc = tool("render_class_view", "-m", chair_obj, "-o", tmp_path / "turn.png", "--views", views,
                "--engine", "workbench", "--resolution", 64, "--verbose")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running: " in proc.stdout and "--factory-startup" in proc.stdout    # --verbose shows the command
    assert proc.stdout.count("TF3DGAN-WROTE") == 2                              # ... and Blender's output
    a, b = read_png(tmp_path / "turn_0.png"), read_png(tmp_path / "turn_1.png")
    assert a.shape == b.shape == (64, 64, 4)
    assert np.abs(a[..., 3] - b[..., 3]).mean() > 0.01
    assert leftovers(tmp_path, {"views.txt", "turn_0.png", "turn_1.png"}) == []


@needs_blender
def test_blender_side_error_is_one_line(tmp_path):
    bad = tmp_path / "empty.obj"
    bad.write_text("# no vertices here\n")
    out = tmp_path / "x.png"
    line = error_line(tool("render_class_view", "-m", bad, "-o", out, "--engine", "workbench",
                           "--resolution", 32))
    assert "Blender failed" in line and "no mesh" in line and str(bad) in line
    assert leftovers(tmp_path, {"empty.obj"}) == []


# ----------------------------------------------------------------------------------------- no Blender needed
def test_missing_model_file(tmp_path):
    line = error_line(tool("render_class_view", "-m", tmp_path / "nope.obj", "-o", tmp_path / "x.png"))
    assert "nope.obj" in line and "no such" in line


def test_unsupported_model_type(tmp_path):
    f = tmp_path / "chair.fbx"
    f.write_bytes(b"x")
    line = error_line(tool("render_class_view", "-m", f, "-o", tmp_path / "x.png"))
    assert "chair.fbx" in line and "'.fbx'" in line and ".obj" in line


def test_missing_blender(chair_obj, tmp_path):
    line = error_line(tool("render_class_view", "-m", chair_obj, "-b", "/nonexistent/blender",
                           "-o", tmp_path / "x.png"))
    assert "Blender not found" in line and "/nonexistent/blender" in line and "apt-get install blender" in line


def test_bad_flags(chair_obj, tmp_path):
    views = tmp_path / "v.txt"
    views.write_text("10 20 0 2\n10 twenty 0 2\n")
    line = error_line(tool("render_class_view", "-m", chair_obj, "--views", views, "-b", sys.executable))
    assert "v.txt:2" in line and "4 numbers" in line
    line = error_line(tool("render_class_view", "-m", chair_obj, "--views", views, "-a", 10))
    assert "either --views" in line
    assert "--color" in error_line(tool("render_class_view", "-m", chair_obj, "--color", "blue"))
    assert "distance" in error_line(tool("render_class_view", "-m", chair_obj, "-d", 0))
    assert ".png" in error_line(tool("render_class_view", "-m", chair_obj, "-o", tmp_path / "x.jpg"))


@pytest.mark.skipif(sys.platform == "win32", reason="uses a script with a #! line as a fake Blender")
def test_failing_blender_is_reported_in_one_line(chair_obj, tmp_path):
    fake = fake_blender(tmp_path / "fake-blender",
                        "print('Blender 0.0 (fake)', flush=True)\nprint('segfault-ish junk', file=sys.stderr)\n"
                        "sys.exit(1)")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = tool("render_class_view", "-m", chair_obj, "-b", fake, "-o", out_dir / "x.png")
    line = error_line(proc)
    assert "Blender failed (exit status 1)" in line
    assert "segfault-ish junk" in proc.stderr                  # Blender's last lines are shown
    assert list(out_dir.iterdir()) == []                       # no PNG, no temporary file


@pytest.mark.skipif(sys.platform == "win32", reason="uses a script with a #! line as a fake Blender")
def test_blender_timeout(chair_obj, tmp_path):
    fake = fake_blender(tmp_path / "slow-blender", "print('started', flush=True)\ntime.sleep(60)")
    proc = tool("render_class_view", "-m", chair_obj, "-b", fake, "-o", tmp_path / "x.png", "--timeout", 1,
                timeout=30)
    assert "did not finish within 1 s" in error_line(proc)
    assert not (tmp_path / "x.png").exists()
    assert leftovers(tmp_path, {"slow-blender"}) == []


@pytest.mark.skipif(sys.platform == "win32", reason="uses a script with a #! line as a fake Blender")
def test_fake_blender_that_writes_nothing(chair_obj, tmp_path):
    fake = fake_blender(tmp_path / "lazy-blender", "sys.exit(0)")
    line = error_line(tool("render_class_view", "-m", chair_obj, "-b", fake, "-o", tmp_path / "x.png"))
    assert "wrote no PNG" in line
    assert leftovers(tmp_path, {"lazy-blender"}) == []


def test_blender_command_numbers():
    """Negative and tiny numbers reach Blender's argparse as values, not options."""
    from pathlib import Path

    from tf3dgan.outputs.blender_scene import parse_args, parse_color, spherical
    from tf3dgan.outputs.render import View, blender_command

    cmd = blender_command("blender", Path("/m.obj"), "obj", [(View(-30, -1e-5, -400, 2), Path("/o.png"))],
                          engine="cycles", samples=4, resolution=32, color=parse_color("#8fb8de"))
    args = parse_args(cmd[cmd.index("--") + 1:])
    assert [float(x) for x in args.view[0][:4]] == pytest.approx([-30, -1e-5, -400, 2], abs=1e-8)
    assert parse_color("#fff") == (1.0, 1.0, 1.0)
    assert parse_color("0.5, 0.25,1") == (0.5, 0.25, 1.0)
    x, y, z = spherical(90, 0, 2)                    # azimuth 90 is on +x, 0 on -y
    assert (x, y, z) == pytest.approx((2, 0, 0), abs=1e-12)
    assert spherical(0, 30, 2) == pytest.approx((0, -2 * np.cos(np.pi / 6), 1), abs=1e-12)


STAND_IN = """import json
import numpy as np
import matplotlib.image as mpimg
args = sys.argv[sys.argv.index("--") + 1:]
size = int(args[args.index("--resolution") + 1])
views = [args[i + 1:i + 6] for i, a in enumerate(args) if a == "--view"]
with open(sys.argv[0] + ".json", "a") as f:
    f.write(json.dumps({"views": views, "engine": args[args.index("--engine") + 1]}) + "\\n")
for *_, png in views:
    image = np.zeros((size, size, 4))
    image[size // 4:-size // 4, size // 4:-size // 4] = 0.5   # a grey square on a transparent background
    mpimg.imsave(png, image)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="uses a script with a #! line as a stand-in Blender")
def test_render_model_called_directly_with_a_stand_in_blender(chair_obj, tmp_path):
    """tf3dgan.outputs.render.render_model (what tools/render_class_view.py calls): the views of a file, or one view
    from the given angles and the defaults, reach Blender, and the PNGs it writes are the result's outputs."""
    import json

    from tf3dgan.errors import Tf3dganError
    from tf3dgan.outputs.render import DEFAULT_DISTANCE, DEFAULT_ELEVATION, DEFAULT_TILT, View, camera_views, render_model

    fake = fake_blender(tmp_path / "stand-in", STAND_IN)
    views = tmp_path / "views.txt"
    views.write_text("0 20 0 2\n90 10 5 2.5\n")
    turn = render_model(chair_obj, tmp_path / "turn.png", views_file=views, blender=str(fake), resolution=48,
                        engine="workbench", samples=2)
    assert turn.outputs == [tmp_path / "turn_0.png", tmp_path / "turn_1.png"] and turn.resolution == 48
    for path in turn.outputs:
        im = read_png(path)
        assert im.shape[:2] == (48, 48) and 0.1 < (im[..., 3] > 0.25).mean() < 0.5
    assert turn.summary() == (f"wrote 2 views to {turn.outputs[0]} ... turn_1.png (workbench, 48x48, "
                              f"{turn.seconds:.1f} s)")
    one = render_model(chair_obj, tmp_path / "one.png", azimuth=30, blender=str(fake), resolution=32)
    assert one.outputs == [tmp_path / "one.png"] and read_png(one.outputs[0]).shape[:2] == (32, 32)
    assert one.summary().startswith(f"wrote {tmp_path / 'one.png'} (cycles, 32x32, ")
    calls = [json.loads(line) for line in (tmp_path / "stand-in.json").read_text().splitlines()]
    assert [[float(x) for x in v[:4]] for v in calls[0]["views"]] == [[0, 20, 0, 2], [90, 10, 5, 2.5]]
    assert [float(x) for x in calls[1]["views"][0][:4]] == pytest.approx([30, DEFAULT_ELEVATION, DEFAULT_TILT,
                                                                            DEFAULT_DISTANCE])
    assert (calls[0]["engine"], calls[1]["engine"]) == ("workbench", "cycles")
    assert camera_views(views) == [View(0, 20, 0, 2), View(90, 10, 5, 2.5)]
    with pytest.raises(Tf3dganError, match="either --views FILE or -a/-e/-t/-d"):
        camera_views(views, elevation=3)
    assert leftovers(tmp_path, {"stand-in", "stand-in.json", "views.txt", "turn_0.png", "turn_1.png", "one.png"}) == []

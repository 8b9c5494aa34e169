"""One occupancy threshold per run: every tool reads the same shape out of the same generator output."""
from __future__ import annotations

import json

import numpy as np
from _cli import error_line, tool

from tf3dgan.training import runs


def _fake_run(folder, output_activation):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": {"output_activation": output_activation},
                                                    "threshold": runs.model_threshold({"output_activation":
                                                                                       output_activation})}))
    grid = np.zeros((8, 8, 8), np.float32)
    grid[2:6, 2:6, 2:6] = 0.4   # solid at the seed's 0.3, empty at a sigmoid run's 0.5
    np.save(folder / "1.npy", grid)
    (folder / "generated").mkdir()
    np.save(folder / "generated" / "seed0_n1.npy", grid[None])
    return folder


def test_the_run_threshold_is_found_from_its_files(tmp_path):
    sig = _fake_run(tmp_path / "sig", "sigmoid")
    lin = _fake_run(tmp_path / "lin", "linear")
    assert runs.threshold_for(sig / "1.npy")[0] == 0.5
    assert runs.threshold_for(sig / "generated" / "seed0_n1.npy")[0] == 0.5
    assert runs.threshold_for(run_dir=lin)[0] == 0.3
    assert runs.threshold_for(sig / "1.npy", given=0.1) == (0.1, "--threshold")
    assert runs.threshold_for(tmp_path / "loose.npy") == (0.3, "the default")
    (sig / "config.json").write_text(json.dumps({"model": {"output_activation": "sigmoid"}}))   # an older run
    assert runs.threshold_for(sig / "1.npy")[0] == 0.5


def test_mesh_and_graph_tools_use_the_runs_threshold(tmp_path):
    sig = _fake_run(tmp_path / "sig", "sigmoid")
    for name in ("convert_to_obj", "convert_to_graph"):
        line = error_line(tool(name, "-f", sig / "1.npy"))
        assert "no voxel above --threshold 0.5" in line, (name, line)
        assert tool(name, "-f", sig / "1.npy", "--threshold", "0.3").returncode == 0
    lin = _fake_run(tmp_path / "lin", "linear")
    assert tool("convert_to_obj", "-f", lin / "1.npy").returncode == 0
    proc = tool("convert_to_obj", "-n", "sig", "--out", tmp_path)
    assert proc.returncode == 0 and "skipped 1 with no voxel above --threshold 0.5" in proc.stdout, proc.stdout

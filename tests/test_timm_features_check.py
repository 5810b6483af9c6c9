"""experiments/timm_features_check.py, run as the lead runs it on the GPU machine (one command,
`PYTHONPATH=.`), at a tiny size on the CPU: our side for real (the `format=timm` files written and
read back through the layout table), timm's side when timm imports, else reported as not run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_timm_features_check_runs_in_one_command_and_says_what_it_did_not_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "experiments/timm_features_check.py", "--refs", "efficientformerv2_s0,nextvit_s",
           "--size", "64", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads((tmp_path / "timm_features_check.json").read_text())
    rows = {(row["ref"], row["dtype"]): row for row in data["results"]}
    assert set(rows) == {(r, d) for r in ("efficientformerv2_s0", "nextvit_s") for d in ("float64", "float32")}
    assert data["info"]["passed"]
    for (_, dtype), row in rows.items():  # the files read back into fresh models give our outputs
        tol = 1e-10 if dtype == "float64" else 1e-5
        assert row["readback_classifier"] <= tol and row["readback_backbone"] <= tol
    assert rows["efficientformerv2_s0", "float32"]["create_kwargs"] == {"img_size": [64, 64]}
    assert rows["nextvit_s", "float64"]["timm_model"] == "nextvit_small"
    md = (tmp_path / "timm_features_check.md").read_text()
    lines = (tmp_path / "timm_features_check.jsonl").read_text().splitlines()
    assert len(lines) == 4
    if importlib.util.find_spec("timm") is None:
        assert not data["info"]["timm_ran"] and "NOT RUN" in md
        assert all(row["timm"].startswith("skipped") for row in rows.values())
    else:
        assert data["info"]["timm_ran"] and "NOT RUN" not in md
        assert all(row["timm_features_from_backbone_file"] <= (1e-10 if d == "float64" else 1e-4)
                   for (_, d), row in rows.items())
    # a rerun given the earlier lines skips the models done there only where timm ran
    r = subprocess.run(cmd[:-1] + [str(tmp_path / "again"), "--resume", str(tmp_path / "timm_features_check.jsonl"),
                                   "--refs", "efficientformerv2_s0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ("done in" in r.stdout) == data["info"]["timm_ran"]

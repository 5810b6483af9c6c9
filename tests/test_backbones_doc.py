"""docs/backbones.md's worked example, run as written at a tiny size: a backbone search on the shipped
ONNX Runtime rows of EfficientFormerV2 backbones at 512x512, the pick extracted features-only, the
FPN + segmentation head of the doc trained a few steps on it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

DOC = Path(__file__).resolve().parents[1] / "docs" / "backbones.md"


def _bash_blocks() -> list[str]:
    return [b.replace("\\\n", " ") for b in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=900, cwd=cwd)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[-3000:]}"
    return r


def test_the_worked_example_runs(tmp_path):
    search = next(b for b in _bash_blocks() if "hwnas.search +target=onnxruntime_cpu" in b).split()
    extract = next(b for b in _bash_blocks() if "hwnas.extract run=" in b).split()
    assert search[:2] == ["python", "-m"] and extract[:2] == ["python", "-m"]
    # the doc's commands, at a tiny size: 4 trials with the proxy evaluator (no supernet to train),
    # no pretrained file (a fresh init), the backbone extracted at 64x64
    search_run = tmp_path / "search"
    r = _run([*[a for a in search[2:] if not a.startswith("hydra.run.dir=")], "evaluator=proxy",
              "search.n_trials=4", "progress=false", f"hydra.run.dir={search_run}"], tmp_path)
    report = (search_run / "report.md").read_text()
    assert "# Search report: efficientformerv2 backbone at 512×512 on onnxruntime_cpu" in report
    assert "task**: `backbone`" in report and "no head" in report and "input **512×512**" in report
    assert "efficientformerv2 backbone at 512×512" in r.stdout
    picks = yaml.safe_load((search_run / "picks.yaml").read_text())
    assert picks["efficientformerv2_s1"]["pick"]["arch"]["task"] == "backbone"
    out = tmp_path / "backbone"
    args = [a.replace("outputs/search/eformer-512", str(search_run)) for a in extract[2:]
            if not a.startswith(("pretrained=", "hydra.run.dir="))]
    _run([*args, "input=[64,64]", f"hydra.run.dir={out}"], tmp_path)
    assert (out / "model.onnx").exists()
    code = re.search(r"```python\n(import torch.*?)```", DOC.read_text(), re.S).group(1)
    assert 'hwnas.load("outputs/extract/backbone")' in code
    scope: dict = {}
    exec(compile(code.replace("outputs/extract/backbone", str(out)), str(DOC), "exec"), scope)
    assert scope["H"] == scope["W"] == 64 and len(scope["backbone"].feature_info) == 4
    losses = scope["losses"]
    assert len(losses) == 5 and losses[-1] < losses[0], losses

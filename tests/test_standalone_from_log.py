"""`experiments/standalone_from_log.py`: a GPU call's stand-alone records rebuilt from its log, where the records
themselves did not come back (issue 25, call 27). Checked against a call whose records did come back (call 26):
every field the analysis reads is the same, the training loss to the 4 decimals the log prints."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALL26 = ROOT / "experiments/results/accuracy_bench_raw/h100-call26-pairs25"
sys.path.insert(0, str(ROOT / "experiments"))


def test_records_rebuilt_from_the_log_are_the_records_the_run_wrote(tmp_path):
    from standalone_from_log import records_from_log
    folder = CALL26 / "pairs_nextvit"
    real = {(r["name"], r["seed"]): r for r in map(json.loads, (folder / "standalone.jsonl").read_text().splitlines())}
    got = records_from_log(CALL26 / "pairs_nextvit.log", folder)
    assert sorted((r["name"], r["seed"]) for r in got) == sorted(real)
    for g in got:
        r = real[(g["name"], g["seed"])]
        for k in ("arch", "arch_id", "key", "space", "recipe", "recipe_id", "test_top1", "val_top1", "macs", "params",
                  "image_size", "epochs_done", "status", "smoke", "data", "device"):
            assert g[k] == r[k], (g["name"], g["seed"], k)
        assert abs(g["train_loss"] - r["train_loss"]) <= 5e-5
        assert g["reconstructed_from"].endswith("pairs_nextvit.log")
    # the app writes them where the analysis reads them, and never over records a run wrote
    work = tmp_path / "f"
    work.mkdir()
    (work / "run.json").write_text((folder / "run.json").read_text())
    cmd = [sys.executable, str(ROOT / "experiments/standalone_from_log.py"), str(CALL26 / "pairs_nextvit.log"), str(work)]
    assert subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).returncode == 0
    assert len((work / "standalone.jsonl").read_text().splitlines()) == len(real)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "not replaced" in r.stderr

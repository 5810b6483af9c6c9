"""Kill a search again and again at random moments; the study must still end exact.

Starts `python -m hwnas.search` (proxy evaluator: trials are fast, so kills land anywhere in the
trial loop: inside Optuna's ask, the objective, the tell), SIGKILLs its process group after a
random delay, `--kills` times, then runs it once more to the end. After every kill it records the
study's trial states; at the end the study must hold exactly `--n-trials` COMPLETE trials and no
RUNNING one, with at most one FAIL per kill.

    python experiments/search_kill_stress.py                    # 15 kills, 3000 trials, ~3 min
    python experiments/search_kill_stress.py --kills 40 --seed 1

Writes experiments/results/search_kill_stress.{json,md} (atomically). Exits 1 if the study is
not exact.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hwnas.latency.backends import cpu_name
from hwnas._files import atomic_write, scratch_until_exit

ROOT = Path(__file__).resolve().parents[1]


def _states(storage: str, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=storage)
    return {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=15)
    ap.add_argument("--n-trials", type=int, default=3000)
    ap.add_argument("--min-delay", type=float, default=4.0, help="seconds before a kill (start-up included)")
    ap.add_argument("--max-delay", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args()

    run_dir = scratch_until_exit("kill-stress")
    cmd = [sys.executable, "-m", "hwnas.search", "+target=onnxruntime_cpu", "space=efficientformerv2",
           "evaluator=proxy", "progress=false", f"search.n_trials={args.n_trials}", f"hydra.run.dir={run_dir}"]
    storage, name = f"sqlite:///{run_dir / 'study.db'}", "onnxruntime_cpu-efficientformerv2-nsga2"
    rng = random.Random(args.seed)
    kills = []
    for k in range(args.kills):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        delay = rng.uniform(args.min_delay, args.max_delay)
        time.sleep(delay)
        if proc.poll() is not None:
            print(f"kill {k + 1}: the search ended before the kill (rc {proc.returncode}); "
                  "raise --n-trials", file=sys.stderr)
            return 1
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        states = _states(storage, name) if (run_dir / "study.db").exists() else {}
        kills.append({"kill": k + 1, "after_s": round(delay, 2), **states})
        print(f"kill {k + 1}/{args.kills} after {delay:.1f} s: {states}", flush=True)

    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    end = _states(storage, name)
    exact = (final.returncode == 0 and end["COMPLETE"] == args.n_trials and end["RUNNING"] == 0
             and end["FAIL"] <= args.kills)
    result = {
        "command": "python experiments/search_kill_stress.py " + " ".join(sys.argv[1:]),
        "search": " ".join(cmd[2:-1]), "n_trials": args.n_trials, "kills": kills,
        "final_returncode": final.returncode, "final_states": end, "exact": exact,
        "host_cpu": cpu_name(), "cores": os.cpu_count(), "optuna": optuna.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "search_kill_stress.json", json.dumps(result, indent=1) + "\n")
    atomic_write(args.out / "search_kill_stress.md", markdown(result))
    print(f"final: {end} -> {'exact' if exact else 'NOT EXACT'}")
    if final.returncode != 0:
        print(final.stderr[-3000:], file=sys.stderr)
    return 0 if exact else 1


def markdown(r: dict) -> str:
    rows = ["| kill | after (s) | COMPLETE | RUNNING | FAIL |", "|---|---|---|---|---|"]
    rows += [f"| {k['kill']} | {k['after_s']} | {k.get('COMPLETE', '-')} | {k.get('RUNNING', '-')} | {k.get('FAIL', '-')} |"
             for k in r["kills"]]
    e = r["final_states"]
    return "\n".join([
        "# Search kill stress", "",
        f"`{r['command'].strip()}` on {r['host_cpu']} ({r['cores']} cores), Optuna {r['optuna']}.", "",
        f"`python -m {r['search']}` with {r['n_trials']} trials, SIGKILLed {len(r['kills'])} times at random "
        "moments, then run once more to the end. Each row is the study right after a kill: a kill inside a "
        "trial leaves one RUNNING trial, which the next start marks FAIL at once (its worker is gone).", "",
        *rows, "",
        f"After the final run (rc {r['final_returncode']}): **{e['COMPLETE']} COMPLETE, {e['RUNNING']} RUNNING, "
        f"{e['FAIL']} FAIL**, {e['PRUNED']} PRUNED — {'exact' if r['exact'] else 'NOT exact'}.", ""])


if __name__ == "__main__":
    sys.exit(main())

"""experiments/paper_ablations.py: the archs are the paper's ablations, and the comparison with the
paper's findings reads the measured order right (the measurements themselves are in
experiments/results/paper_ablations.json)."""
import sys
from pathlib import Path

import search_spaces

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import paper_ablations as pa  # noqa: E402


def test_the_archs_are_next_vit_s_with_one_thing_changed():
    space = search_spaces.get_space("nextvit")
    s = space.reference("nextvit_s")
    archs = pa.ablation_archs()
    table8 = dict(archs["table8_r"])
    assert list(table8) == ["r=0.5", "r=0.75", "r=1"] and table8["r=0.75"] == s
    for label, a in table8.items():  # r in every NTB, everything else Next-ViT-S's
        r = float(label[2:])
        assert [st.get("r") for st in a.stages] == [None, r, r, r]
        assert [{k: v for k, v in st.items() if k != "r"} for st in a.stages] == \
            [{k: v for k, v in st.items() if k != "r"} for st in s.stages]
    assert table8["r=0.5"].params() < s.params() < table8["r=1"].params()
    table2 = dict(archs["table2_pattern"])
    assert table2["(N,L)=(4,2)"] == s
    for label, a in table2.items():
        n, l = map(int, label[7:-1].split(","))
        assert (a.stages[2]["n"], a.stages[2]["l"]) == (n, l)
        assert a.stages[:2] == s.stages[:2] and a.stages[3] == s.stages[3]
        ntbs = [b for b in a.blocks() if b.kind == "nextvit.ntb" and b["sr"] == 2]
        assert len(ntbs) == l


def _rows(ms: dict, spread: float = 0.01) -> list[dict]:
    return [{"label": k, "measured_ms": v, "predicted_ms": v, "rounds_spread": spread} for k, v in ms.items()]


def test_the_comparison_reads_the_order():
    agree = pa.compare("table8_r", _rows({"r=0.5": 50.0, "r=0.75": 55.0, "r=1": 60.0}))
    assert agree["r1_slowest_beyond_noise"] and agree["verdict"].startswith("agrees")
    assert agree["measured_order_fastest_first"] == ["r=0.5", "r=0.75", "r=1"]
    partly = pa.compare("table8_r", _rows({"r=0.5": 56.0, "r=0.75": 55.0, "r=1": 60.0}))
    assert partly["r1_slowest_beyond_noise"] and partly["r0.5_vs_r0.75"] == "slower"
    assert partly["verdict"].startswith("partly") and "slower than r = 0.75" in partly["verdict"]
    noisy = pa.compare("table8_r", _rows({"r=0.5": 50.0, "r=0.75": 55.0, "r=1": 60.0}, spread=0.12))
    assert noisy["verdict"].startswith("undecided")  # 10 % apart, rounds 12 % apart
    within = pa.compare("table8_r", _rows({"r=0.5": 53.0, "r=0.75": 55.0, "r=1": 60.0}, spread=0.05))
    assert within["r0.5_vs_r0.75"] == "within noise" and "within the rounds' noise" in within["verdict"]
    assert pa.compare("table8_r", _rows({"r=0.5": 61.0, "r=0.75": 62.0, "r=1": 50.0}))["verdict"].startswith("disagrees")
    similar = pa.compare("table2_pattern", _rows({"(N,L)=(1,4)": 52.0, "(N,L)=(2,3)": 50.0, "(N,L)=(4,2)": 49.0}))
    assert similar["similar_latency_within_10pct"] and "holds" in similar["verdict"]
    apart = pa.compare("table2_pattern", _rows({"(N,L)=(1,4)": 60.0, "(N,L)=(2,3)": 50.0, "(N,L)=(4,2)": 49.0}))
    assert not apart["similar_latency_within_10pct"] and "does not hold" in apart["verdict"]

"""The estimated Core ML table grows with the space (`coreml_cost --add-missing`): the table's own cost
model gives the new rows, and only after the current code's graphs reproduce its stored rows."""
import json

import pytest

import search_spaces
from hwnas.latency import coreml_cost
from hwnas.latency.table import TABLES_DIR, LatencyTable, provenance_path, read_provenance, read_rows

SHIPPED = TABLES_DIR / "coreml" / "iphone-12-estimated.csv"
_FEATURES: dict = {}


@pytest.fixture
def cached_features(monkeypatch):
    """Real graph features (ONNX export of each block), each block's computed once per session."""
    real = coreml_cost.block_features

    def cached(specs, progress=True):
        todo = [s for s in specs if s.key not in _FEATURES]
        _FEATURES.update(real(todo, progress=False) if todo else {})
        return {s.key: _FEATURES[s.key] for s in specs}
    monkeypatch.setattr(coreml_cost, "block_features", cached)


def _copy(tmp_path, drop=(), **prov_changes):
    """The shipped table for Next-ViT only (its references are what the check re-derives), less `drop`."""
    rows = read_rows(SHIPPED)
    prov = dict(read_provenance(provenance_path(SHIPPED)), spaces=["nextvit"], **prov_changes)
    path = tmp_path / "iphone-12-estimated.csv"
    LatencyTable({k: v for k, v in rows.items() if k not in drop}, prov, path, check=False).save()
    return path, rows


def _new_ntbs():
    """One NTB only r = 1 has (no MHCA branch) and one only r = 0.5 has, both at full width."""
    ntbs = [s for s in search_spaces.get_space("nextvit").all_blocks() if s.kind == "nextvit.ntb" and s["out"] == 1024]
    return [next(s.key for s in ntbs if s["mhsa"] == 1024), next(s.key for s in ntbs if s["mhsa"] == 512)]


def test_add_missing_rows_gives_the_rows_the_cost_model_gave(tmp_path, cached_features):
    drop = _new_ntbs()
    path, shipped = _copy(tmp_path, drop=drop, complete={"nextvit": False})
    table, added = coreml_cost.add_missing_rows(path, progress=False)
    assert sorted(added) == sorted(drop)
    for k in drop:  # what the shipped table holds for them (added the same way), to the CSV's precision
        assert f"{table.rows[k]['median_ms']:.6g}" == f"{shipped[k]['median_ms']:.6g}"
        assert table.rows[k]["fingerprint"] == shipped[k]["fingerprint"] and table.rows[k]["runs"] == 0
    again = LatencyTable.load(path, target="coreml", space="nextvit")
    assert again.is_estimated and again.provenance["complete"] == {"nextvit": True}
    assert again.provenance["rows_added"][-1]["n"] == 2 and "reproduced the stored rows" in \
        again.provenance["rows_added"][-1]["how"]
    s_r1 = search_spaces.Arch("nextvit", [dict(st, r=1.0) if "r" in st else st for st in
                                          search_spaces.get_space("nextvit").reference("nextvit_s").stages])
    assert again.predict(s_r1) > again.predict(search_spaces.get_space("nextvit").reference("nextvit_s"))


def test_a_cost_model_that_no_longer_gives_the_rows_is_refused(tmp_path, cached_features):
    prov = read_provenance(provenance_path(SHIPPED))
    cm = json.loads(json.dumps(prov["cost_model"]))
    cm["coefficients_ms_per_unit"]["macs"] *= 1.01  # as if the blocks' graphs had changed since
    path, _ = _copy(tmp_path, drop=_new_ntbs(), cost_model=cm)
    with pytest.raises(coreml_cost.CostModelMismatch, match="rebuild it with `python -m hwnas.latency.coreml_cost`"):
        coreml_cost.add_missing_rows(path, progress=False)
    assert len(read_rows(path)) == len(read_rows(SHIPPED)) - 2  # nothing written

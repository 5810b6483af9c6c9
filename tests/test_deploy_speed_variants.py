"""experiments/deploy_speed.py --compiled --ours-variant: variants of our AOTInductor package are read
into form settings and Inductor configs, a bad setting fails before any compile, a row without a
variant asked for is measured again, the table shows every complete run of a model and batch (a partial run's
variants too), and --tabulate rewrites the table from committed rows."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hwnas.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import deploy_speed  # noqa: E402


def test_a_variant_splits_into_form_settings_and_inductor_configs():
    v = deploy_speed.parse_variants(["shifted:depthwise=shifted,inductor.max_autotune=true,inductor.x=3",
                                     "plain:"])
    assert v == {"shifted": {"form": {"depthwise": "shifted"}, "inductor_configs": {"max_autotune": True, "x": 3}},
                 "plain": {"form": {}, "inductor_configs": {}}}
    with pytest.raises(ConfigError, match="depthwise='fused'"):
        deploy_speed.parse_variants(["v:depthwise=fused"])
    with pytest.raises(SystemExit, match="NAME:KEY=VALUE"):
        deploy_speed.parse_variants(["depthwise=shifted"])
    with pytest.raises(SystemExit, match="'depthwise' is not KEY=VALUE"):
        deploy_speed.parse_variants(["v:depthwise"])


def _row(variants=None, partial=False, ms=1.0):
    res = {"ours_deploy_eager": {"median_ms": 2.0}, "ours_aoti_shipped": {"median_ms": ms},
           "timm_default": {"median_ms": 1.0}}
    row = {"model": "efficientformerv2_s0", "batch": 1, "variants": res, "timm_compile_seconds": {"default": 9.0},
           "timm_best_mode": "default", "ratio_aoti_vs_timm_compiled": ms, "aoti_compile_seconds": 30.0,
           "rel_err_vs_timm_fp32": 1e-3}
    if variants:
        row["ours_variants"] = {name: {"settings": {"form": {"depthwise": "shifted"}, "inductor_configs": {}},
                                       "median_ms": 0.5, "ratio_vs_shipped": 0.5 / ms, "ratio_vs_timm_compiled": 0.5,
                                       "compile_seconds": 31.0, "rel_err_vs_fp32": 1e-3} for name in variants}
    if partial:
        row["partial"] = True
    return row


def test_a_row_without_an_asked_variant_is_measured_again_and_every_complete_run_is_tabled():
    old, new = _row(ms=0.98), _row(["shifted"], ms=0.97)
    assert deploy_speed.covers(old, ["default"]) and not deploy_speed.covers(old, ["default"], {"shifted": {}})
    assert deploy_speed.covers(new, ["default"], {"shifted": {}})
    assert not deploy_speed.covers(_row(["shifted"], partial=True), ["default"], {"shifted": {}})
    md = deploy_speed.markdown_compiled([old, new, _row(["shifted_mat"], partial=True, ms=0.6)], {"gpu": "G"})
    body = [line for line in md.splitlines() if line.startswith("| efficientformerv2_s0 | 1 | 1.000")]
    # both complete runs, in the order measured (each ratio from its own rounds); the partial run is not a line
    assert len(body) == 2 and "| 0.98 (default) |" in body[0] and "| 0.97 (default) |" in body[1]
    assert "separate runs" in md
    assert "| efficientformerv2_s0 | 1 | shifted | depthwise=shifted | 0.500 | 0.52 | 0.50 | 31 | 1.0e-03 |" in md
    # a partial run's variant was timed against our shipped package in the same rounds: it is shown, marked
    assert "| efficientformerv2_s0 | 1 (partial run) | shifted_mat | depthwise=shifted | 0.500 | 0.83 |" in md
    # a partial row is a line only where no complete row of its model and batch exists
    assert len(deploy_speed.runs_to_show([_row(partial=True, ms=0.7), _row(partial=True, ms=0.6)])) == 1


def test_a_row_of_an_older_shipped_default_is_measured_again():
    """Rows measured before the form's defaults changed (cudnn, no autotuning) do not stand for the package
    as it ships now: a rerun measures them again, and the table names what each row shipped."""
    from hwnas.latency.deploy import deploy_form
    now = deploy_form("torch_inductor", batch=1).settings()
    legacy, fresh = _row(), {**_row(), "shipped_form": now}
    assert deploy_speed.covers(legacy, ["default"]) and not deploy_speed.covers(legacy, ["default"], (), now)
    assert deploy_speed.covers(fresh, ["default"], (), now)
    md = deploy_speed.markdown_compiled([legacy, fresh], {"gpu": "G"})
    assert "| cudnn, no |" in md and "| shifted, max_autotune |" in md


def test_tabulate_rewrites_the_table_from_the_committed_rows(tmp_path):
    import json
    rows = tmp_path / "deploy_speed_compiled_g.jsonl"
    a, b = _row(ms=0.98), _row(["shifted"], ms=0.97)
    for r in (a, b):
        r["device_name"] = "G"
    b["machine"] = {"gpu": "G", "torch": "9.9", "timm": "8.8"}
    rows.write_text("".join(json.dumps(r) + "\n" for r in (a, b)))
    deploy_speed.main(["--compiled", "--tabulate", str(rows)])
    md = rows.with_suffix(".md").read_text()
    assert "Machine: G; torch 9.9, timm 8.8" in md
    assert sum(line.startswith("| efficientformerv2_s0 | 1 | 1.000") for line in md.splitlines()) == 2
    with pytest.raises(SystemExit, match="no rows to tabulate"):
        deploy_speed.main(["--compiled", "--tabulate", str(tmp_path / "none.jsonl")])

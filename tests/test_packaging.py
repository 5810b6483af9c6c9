"""What a wheel packs (issue 24): the shipped tables, never a profile's working files (`*.partial.*`,
as a killed profile leaves them in the source tree of an editable install) or temporary files."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_never_packs_a_partial_table(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("hwnas", "supernet", "search_spaces", "latency_tables"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=skip)
    shipped = src / "latency_tables" / "onnxruntime_cpu" / "amd-epyc"
    for suffix in (".csv", ".json", ".networks.csv"):  # what a killed profile leaves beside a table
        shutil.copy(shipped.with_suffix(".csv"), src / "latency_tables" / "onnxruntime_cpu" / f"amd-epyc.partial{suffix}")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    [whl] = (tmp_path / "dist").glob("hwnas-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "latency_tables/onnxruntime_cpu/amd-epyc.csv" in names and "latency_tables/onnxruntime_cpu/amd-epyc.json" in names
    assert not [n for n in names if ".partial." in n], [n for n in names if ".partial." in n]

"""A fourth target and a new export format, defined only here, go through profile, search and
extract -- with no change to hwnas itself.

`torch_eager_cpu`: PyTorch eager on the CPU, timing the BN-folded fp32 module (its deploy form), with
its own schema and backend, registered with `hwnas.latency.target.register_target`; `eager_pt`, the
format that ships it (that module pickled whole), with its own file, check and tolerance, registered
with `hwnas.export.format.register_format`. They run on the test-only TinyNet family of
`tests/test_plugin_family.py`, whose whole space profiles in seconds.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import yaml

import search_spaces
import supernet
from hwnas.convert.optimize import fold
from hwnas.export.format import ExportContext, Format, Tolerance, get_format, list_formats, register_format, unregister_format
from hwnas.export.verify import compare, run_check
from hwnas.latency.backends import Backend, fingerprint_deployed
from hwnas.latency.config import TargetConfig
from hwnas.latency.deploy import DeployForm
from hwnas.latency.target import Target, get_target, list_targets, register_target, unregister_target
from test_plugin_family import NAME as FAMILY, RES, TinyFamily, TinySpace

TARGET = "torch_eager_cpu"
FORMAT = "eager_pt"
FAST = ["target.warmup=5", "target.repeats=30", "target.min_runs=10", "target.max_seconds=0.2"]


# ---- the target: schema, deploy form, backend -------------------------------------------------------
@dataclass
class EagerConfig(TargetConfig):
    name: str = TARGET
    runtime: str = "torch"
    threads: int = 1  # torch's intra-op threads while timing
    clock: str = "thread"  # the timing thread's CPU time: a 1-thread forward runs in the caller


class EagerModule(DeployForm):
    """PyTorch eager on the CPU runs the BN-folded fp32 module."""

    def module(self, model):
        return fold(model.float()).eval()

    def describe(self) -> str:
        return f"the BN-folded fp32 module, PyTorch eager on the CPU; batch {self.batch}"


class EagerBackend(Backend):
    name = TARGET
    runtime = "torch"

    def runtime_version(self) -> str:
        return torch.__version__

    def method(self) -> str:
        return f"eager forward of the deploy form, {self.warmup} warm-up runs then up to {self.repeats} timed runs"

    def measure(self, model, input_shape):
        model = self.deploy(model.cpu())
        x = self.form.example_input(input_shape)
        fp = fingerprint_deployed(model, x, self.form)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return {**self._time_loop(lambda: model(x)), "fingerprint": fp}
        finally:
            torch.set_num_threads(threads)


class EagerTarget(Target):
    name = TARGET
    schema = EagerConfig
    backend = EagerBackend
    form = EagerModule
    device = "cpu"
    ships = FORMAT
    how = "model_eager.pt (format=eager_pt): torch.load(path, weights_only=False)(x) on the CPU, **SETTINGS"
    label = "eager CPU"


# ---- the format that ships it ---------------------------------------------------------------------------
class EagerPtFormat(Format):
    name = FORMAT
    files = ("model_eager.pt",)
    tolerances = {FORMAT: Tolerance(1e-5, "the BN-folded fp32 module, pickled whole")}

    def export(self, ctx: ExportContext) -> dict:
        path = ctx.path("model_eager.pt")
        torch.save(get_target(TARGET).deploy_form(batch=ctx.shape[0]).module(copy.deepcopy(ctx.model)), path)

        def check():
            with torch.no_grad():
                return compare(torch.load(path, weights_only=False)(ctx.x), ctx.ref, self.name)
        return run_check(self.name, f"torch {torch.__version__}", "torch.load + eager forward vs PyTorch", check)


@pytest.fixture(scope="module")
def plugins():
    search_spaces.register_space(FAMILY, TinySpace)
    supernet.register_family(TinyFamily())
    register_target(EagerTarget)
    register_format(EagerPtFormat)
    yield
    unregister_format(FORMAT)
    unregister_target(TARGET)
    supernet.unregister_family(FAMILY)
    search_spaces.unregister_space(FAMILY)
    assert TARGET not in list_targets() and FORMAT not in list_formats()


def test_profile_search_and_extract_through_a_registered_target_and_format(plugins, tmp_path):
    from hwnas.config import compose
    from hwnas.extract import extract
    from hwnas.latency import LatencyTable
    from hwnas.profile import register as register_profile, run as profile
    from hwnas.search.app import compose_config, run as search

    # 1. profile (the app, +target=): every block of the space, 2 networks for the correction
    register_profile()
    table_path = tmp_path / "tables" / "eager.csv"
    cfg = compose("profile", ["+target=" + TARGET, f"space.name={FAMILY}", f"space.resolution={RES}",
                              f"out={table_path}", "n_fit=6", "progress=false", *FAST])
    assert profile(cfg, tmp_path / "profile") == table_path
    table = LatencyTable.load(table_path, target=TARGET, space=FAMILY)
    space = search_spaces.get_space(FAMILY)
    assert {b.key for b in space.all_blocks()} <= set(table.rows) and table.predict(space.max_arch()) > 0
    assert table.deploy_form().describe() == EagerModule(batch=1).describe()

    # 2. a 4-trial search on that table, its picks timed on the target's backend (verify=true)
    cfg = compose_config(["+target=" + TARGET, f"target.table={table_path}", f"space.name={FAMILY}",
                          f"space.resolution={RES}", "search.n_trials=4", "search.population_size=4",
                          "evaluator=proxy", "verify=true", "progress=false", *FAST])
    out = search(cfg, tmp_path / "search")
    assert len(out["records"]) == 4 and out["targets"] == [TARGET]
    assert out["verification"] and all(r["measured_ms"] > 0 for r in out["verification"])
    picks = yaml.safe_load((tmp_path / "search" / "picks.yaml").read_text())
    assert picks["tiny_l"]["pick"] is not None

    # 3. extract the pick in the target's format; the manifest proves the table timed what ships
    manifest = extract(run=str(tmp_path / "search"), pick="tiny_l", formats=[get_target(TARGET).ships],
                       out_dir=tmp_path / "export", latency_tables=[table_path])
    assert manifest["checks_passed"] and list(manifest["formats"]) == ["pt", FORMAT]
    assert manifest["formats"][FORMAT]["files"] == ["model_eager.pt"] and (tmp_path / "export" / "model_eager.pt").is_file()
    assert manifest["tolerances"][FORMAT]["rel"] == 1e-5
    deploy = manifest["predicted_latency_ms"][f"tables/{table_path.name}"]["deploy"]
    assert deploy["timed_what_ships"] and deploy["format"] == FORMAT, deploy
    assert deploy["how"] == "model_eager.pt (format=eager_pt): torch.load(path, weights_only=False)(x) on the CPU, " \
                            "batch=1, precision=fp32"


def test_a_target_or_format_missing_its_parts_is_refused():
    from hwnas.errors import ConfigError
    from hwnas.export.format import ExportError

    class NoBackend(Target):
        name, schema, form = "half_made", EagerConfig, EagerModule

    with pytest.raises(ConfigError, match="NoBackend sets no backend"):
        register_target(NoBackend)

    class NoTolerance(Format):
        name, files = "half_made", ("m.bin",)

    with pytest.raises(ExportError, match=r"its own tolerance \(tolerances\['half_made'\]\)"):
        register_format(NoTolerance)
    assert "half_made" not in list_targets() and "half_made" not in list_formats()
    with pytest.raises(ExportError, match="unknown export format 'half_made'"):
        get_format("half_made")

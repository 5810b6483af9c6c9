"""The one registry every extension axis shares (`hwnas._registry.Registry`: targets, export formats,
search strategies, datasets): one clear error for an unknown name, a later entry of a name replacing
the earlier in its place, the stated list order -- and each axis's public names over it."""
from __future__ import annotations

import pytest

from hwnas._registry import Registry
from hwnas.errors import ConfigError, HwnasError


def test_unknown_name_is_one_error_of_the_axis_listing_the_known_and_how_to_add_one():
    reg = Registry("widget", ConfigError, "register one with register_widget")
    reg.add("b", 2)
    reg.add("a", 1)
    assert reg.lookup("a") == 1
    with pytest.raises(ConfigError) as e:
        reg.lookup("zz")
    assert str(e.value) == "unknown widget 'zz' (allowed: a, b); register one with register_widget"
    with pytest.raises(ConfigError, match=r"unknown widget \['x'\] \(allowed: a, b\)"):
        reg.lookup(["x"])  # not a name at all: the same error, not a TypeError
    with pytest.raises(ConfigError, match="a widget needs a non-empty name"):
        reg.add("", 3)
    # read as a dict: reg[name] is a KeyError, .get and `in` do not raise
    with pytest.raises(KeyError):
        reg["zz"]
    assert reg.get("zz") is None and "zz" not in reg and "a" in reg and len(reg) == 2


def test_a_duplicate_replaces_the_earlier_entry_at_its_place_and_remove_forgets_it():
    reg = Registry("format", ConfigError, sort=False)
    for name in ("pt", "onnx", "coreml"):
        reg.add(name, name.upper())
    assert reg.add("onnx", "ONNX v2") == "ONNX v2"
    assert reg.lookup("onnx") == "ONNX v2" and reg.names() == ["pt", "onnx", "coreml"]
    assert reg.remove("onnx") == "ONNX v2" and reg.remove("onnx") is None
    assert reg.names() == ["pt", "coreml"] and list(reg.values()) == ["PT", "COREML"]


def test_names_are_sorted_or_in_registration_order_as_asked():
    sorted_reg, ordered = Registry("x", ConfigError), Registry("x", ConfigError, sort=False)
    for name in ("tpe", "nsga2", "random"):
        sorted_reg.add(name, None)
        ordered.add(name, None)
    assert sorted_reg.names() == ["nsga2", "random", "tpe"] and list(sorted_reg) == ["tpe", "nsga2", "random"]
    assert ordered.names() == ["tpe", "nsga2", "random"]


def test_every_axis_reports_an_unknown_name_the_same_way():
    from hwnas.data import DataError, get_dataset, list_datasets
    from hwnas.export.format import ExportError, get_format, list_formats
    from hwnas.latency import UnknownTargetError
    from hwnas.latency.target import get_target, list_targets
    from hwnas.search.strategies import get_strategy, list_strategies
    for get, names, kind, error in [(get_target, list_targets, "target", UnknownTargetError),
                                    (get_format, list_formats, "export format", ExportError),
                                    (get_strategy, list_strategies, "search strategy", ConfigError),
                                    (get_dataset, list_datasets, "dataset", DataError)]:
        with pytest.raises(error) as e:
            get("no_such_thing")
        assert isinstance(e.value, HwnasError)
        assert str(e.value).startswith(f"unknown {kind} 'no_such_thing' (allowed: {', '.join(names())});"), str(e.value)
    assert list_targets() == sorted(list_targets()) and list_strategies() == sorted(list_strategies())
    assert list_formats()[:2] == ["pt", "onnx"]  # formats: the order an export writes them in

"""What can be built: architectures, blocks and the search spaces (pure Python, no torch).

    import search_spaces
    space = search_spaces.get_space("nextvit")      # or "efficientformerv2"
    arch = space.reference("nextvit_s"); arch.params(); arch.macs(); arch.blocks()

A model family plugs in with a `SearchSpace` subclass and `register_space(name, cls)` (its torch
side registers a `supernet.Family` under the same name); Next-ViT and EfficientFormerV2 register
themselves on import.
"""
from .core import (TASKS, Arch, ArchError, BlockSpec, Layout, Placed, SearchSpace, StageLayout,
                   canonical_resolution, check_choice, check_count, check_keys, get_space, hw_pair, hw_value,
                   input_pair, list_spaces, make_divisible, next_lower, parse_scope, register_space, scope,
                   unregister_space, with_change)
from .errors import HwnasError
from . import nextvit as _nextvit  # noqa: F401  (registers the space)
from . import efficientformerv2 as _efficientformerv2  # noqa: F401

__all__ = ["TASKS", "Arch", "ArchError", "BlockSpec", "HwnasError", "Layout", "Placed", "SearchSpace", "StageLayout",
           "canonical_resolution", "check_choice", "check_count", "check_keys", "get_space", "hw_pair", "hw_value",
           "input_pair", "list_spaces", "make_divisible", "next_lower", "parse_scope", "register_space", "scope",
           "unregister_space", "with_change"]

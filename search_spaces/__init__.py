"""What can be built: architectures, blocks and the two search spaces (pure Python, no torch).

    import search_spaces
    space = search_spaces.get_space("nextvit")      # or "efficientformerv2"
    arch = space.reference("nextvit_s"); arch.params(); arch.macs(); arch.blocks()
"""
from .core import (Arch, ArchError, BlockSpec, Layout, Placed, SearchSpace, StageLayout,
                   get_space, list_spaces, make_divisible)
from . import nextvit as _nextvit  # noqa: F401  (registers the space)
from . import efficientformerv2 as _efficientformerv2  # noqa: F401

__all__ = ["Arch", "ArchError", "BlockSpec", "Layout", "Placed", "SearchSpace", "StageLayout",
           "get_space", "list_spaces", "make_divisible"]

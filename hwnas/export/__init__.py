"""Exports a user receives: one subnet with its weights in every format asked for, each checked on
its runtime against PyTorch, written all at once with a `manifest.json` (`bundle`, `verify`,
`manifest`, `pt`). A format is one registered `Format` (`format`: its files, check and tolerance;
the built-in seven in `formats`). The converters they use live one layer down, in `hwnas.convert`.
"""
from . import formats as _formats  # noqa: F401  (registers the built-in formats)
from .format import (ExportError, Format, Tolerance, get_format, list_formats, loads_cxx_packages, register_format,
                     unregister_format)

__all__ = ["ExportError", "Format", "Tolerance", "get_format", "list_formats", "loads_cxx_packages", "register_format",
           "unregister_format"]

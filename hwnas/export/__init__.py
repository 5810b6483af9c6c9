"""Exports a user receives: one subnet with its weights in every format asked for, each checked on
its runtime against PyTorch, written all at once with a `manifest.json` (`bundle`, `verify`,
`manifest`, `pt`). The converters they use live one layer down, in `hwnas.convert`.
"""

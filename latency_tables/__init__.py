"""The shipped latency tables, one folder per target (`<target>/<device>.csv` + `.json` provenance).

A data package: a wheel carries the tables, and `hwnas.latency` finds them through
`importlib.resources` wherever hwnas is installed; in the repository this folder is where they
live and are re-profiled.
"""

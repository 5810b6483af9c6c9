"""What the tests share: the built-in model families that every family-generic test runs on.

A test (or fixture) that takes `space_name` runs once per built-in space. The list is read from the
registry when the tests start, before any test registers a family of its own
(tests/test_plugin_family.py), so a new built-in family is tested everywhere without an edit here.
"""
import search_spaces

#: the built-in search spaces (each with its supernet.Family)
SPACES = tuple(search_spaces.list_spaces())


def pytest_generate_tests(metafunc):
    if "space_name" in metafunc.fixturenames:
        # module scope: a module-scoped fixture built from `space_name` (a supernet) is built once per space
        metafunc.parametrize("space_name", SPACES, scope="module")

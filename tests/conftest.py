"""What the tests share: the built-in model families every family-generic test runs on, and small
generated datasets (CI downloads nothing).

A test (or fixture) that takes `space_name` runs once per built-in space. The list is read from the
registry when the tests start, before any test registers a family of its own
(tests/test_plugin_family.py), so a new built-in family is tested everywhere without an edit here.
"""
import numpy as np
import pytest

import search_spaces

#: the built-in search spaces (each with its supernet.Family)
SPACES = tuple(search_spaces.list_spaces())


def pytest_generate_tests(metafunc):
    if "space_name" in metafunc.fixturenames:
        # module scope: a module-scoped fixture built from `space_name` (a supernet) is built once per space
        metafunc.parametrize("space_name", SPACES, scope="module")


def make_fashion_mnist(root, n_train=120, n_test=30, seed=0, gz=True):
    """Four small IDX files in Fashion-MNIST's layout (class c: a bright block at a class-specific
    place on noise), gzip-compressed or not."""
    from hwnas.data import write_idx
    rng = np.random.default_rng(seed)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 5)
            x[i, 4 + r * 10:12 + r * 10, 2 + col * 5:6 + col * 5] = 250
        suffix = ".gz" if gz else ""
        write_idx(root / f"{stem}-images-idx3-ubyte{suffix}", x)
        write_idx(root / f"{stem}-labels-idx1-ubyte{suffix}", y)
    return root


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory):
    """A folder of four small Fashion-MNIST-layout IDX files (200 training, 40 test images)."""
    return make_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=200, n_test=40)

"""What the tests share: the built-in model families every family-generic test runs on, and small
generated datasets (CI downloads nothing).

A test (or fixture) that takes `space_name` runs once per built-in space. The list is read from the
registry when the tests start, before any test registers a family of its own
(tests/test_plugin_family.py), so a new built-in family is tested everywhere without an edit here.
"""
import os

import numpy as np
import pytest
import torch

import search_spaces


def _one_thread_set_per_worker():
    """Under pytest-xdist (`-n 2`, the default): each worker gets its share of the cores for torch's
    OpenMP pool, also in the processes a test starts (OMP_NUM_THREADS). By default every worker
    starts one thread per core, so two workers on CI's 2 cores run 4 spinning threads on 2 cores:
    tests/test_train.py + tests/test_supernet.py took 11 min 56 s that way and 1 min 49 s with one
    thread each (Intel Xeon VM, 2 cores, 2026-12-07); the whole suite crossed CI's 25 minutes.
    A thread count a user or test sets explicitly is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    share = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


_one_thread_set_per_worker()

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


def make_image_folder(root, classes=("cat", "dog"), n_train=4, n_val=2, size=(40, 48), seed=0, corrupt=()):
    """`root/{train,val}/<class>/<i>.png` of random pixels (the ImageNet layout), plus the unreadable
    files `corrupt` names as `split/class/file` (random bytes under an image name, or a PNG cut in
    half when the name ends in `-cut.png`). Returns the paths of the unreadable files."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    bad = []
    for rel in corrupt:
        path = root / rel
        if path.name.endswith("-cut.png"):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            path.write_bytes(rng.integers(0, 256, 700, dtype=np.uint8).tobytes())
        bad.append(path)
    return bad


def randomise(module, seed=0, attention_biases=False):
    """BatchNorm statistics and affine, LayerScales (and, with `attention_biases`, EfficientFormerV2's
    attention-bias tables) away from their init, so that every branch matters."""
    import torch
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
        if hasattr(m, "gamma"):  # LayerScale
            m.gamma.data.fill_(0.5)
        if attention_biases and getattr(m, "attention_biases", None) is not None:
            m.attention_biases.data.copy_(torch.randn(m.attention_biases.shape, generator=g))


@pytest.fixture
def counting_proxy(monkeypatch):
    """The proxy evaluator, counting how often each arch is evaluated."""
    from hwnas.search import objectives
    calls: dict[str, int] = {}
    original = objectives.ProxyEvaluator.evaluate

    def evaluate(self, arch):
        calls[arch.id] = calls.get(arch.id, 0) + 1
        return original(self, arch)

    monkeypatch.setattr(objectives.ProxyEvaluator, "evaluate", evaluate)
    return calls

"""Fixtures: the bundled sample, a staged FASTAI_HOME, and the full MNIST set when CI passes its location in, with the
models trained on it (each once per test run). Under pytest-xdist (`-n`, pyproject.toml's default): one torch thread
per worker, and the tests that share an expensive fixture on one worker, so that it is built once."""
import os, signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
from fastai_binary_digits.mnist import write_mnist_png

IDX_ENV = 'MNIST_IDX_DIR'  # folder holding the four original MNIST IDX files; CI sets it, tests needing it skip without
FULL_GROUP = 'full_set'    # the xdist group of the tests that use the models trained on the full set


def pytest_configure(config):
    "An xdist worker runs torch on one thread, and so do the processes it starts: two workers share two cores"
    if os.environ.get('PYTEST_XDIST_WORKER'):
        import torch
        torch.set_num_threads(1)
        os.environ.setdefault('OMP_NUM_THREADS', '1')


def _shares_module_fixture(item) -> bool:
    "Whether `item` uses a module-scoped fixture (built once by each worker that runs a test of that module)"
    defs = getattr(item, '_fixtureinfo', None)  # pytest's resolved fixtures of the test
    return bool(defs) and any(d.scope == 'module' for ds in defs.name2fixturedefs.values() for d in ds)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (`--dist loadgroup`)
def pytest_collection_modifyitems(config, items):
    "Tests that share an expensive fixture run on one worker: the full set's models, or a module's own fixtures"
    items.sort(key=lambda item: item.get_closest_marker('long') is None)  # long tests first: none of them ends last
    for item in items:
        if 'full_learner' in item.fixturenames: item.add_marker(pytest.mark.xdist_group(FULL_GROUP))
        elif _shares_module_fixture(item): item.add_marker(pytest.mark.xdist_group(item.path.stem))


def full_set_path():
    "The folder of the full MNIST IDX files that CI passes in (MNIST_IDX_DIR), or None"
    d = os.environ.get(IDX_ENV)
    return Path(d) if d and any((Path(d)/f'train-images-idx3-ubyte{ext}').exists() for ext in ('', '.gz')) else None


@pytest.fixture(scope='session')
def idx_dir():
    "The full MNIST IDX files, or skip"
    d = full_set_path()
    if d is None: pytest.skip(f"the full MNIST set is absent: set {IDX_ENV} to a folder holding the four IDX files")
    return d


@pytest.fixture(scope='session')
def full_learner(idx_dir):
    """`full_learner(arch, fit, pair=(4, 8), valid='split', seed=42)`: a learner of `arch` on the full set's `pair`,
    trained by `fit` (`('fit', 20, 0.1)` calls `learn.fit(20, 0.1)`), seeded; each is trained once per test run and
    shared by the tests that ask for it: read it, never train it further"""
    loaders, learners = {}, {}
    def get(arch:str, fit:tuple, pair=(4, 8), valid:str='split', seed:int=42):
        key = (arch, fit, tuple(pair), valid, seed)
        if key not in learners:
            if key[2:] not in loaders:
                loaders[key[2:]] = BinaryDigitsDataLoaders.from_mnist(pair=pair, path=idx_dir, valid=valid, seed=seed)
            learn = binary_learner(loaders[key[2:]], arch=arch, seed=seed)
            method, *args = fit
            with learn.no_bar(), learn.no_logging(): getattr(learn, method)(*args)
            learners[key] = learn
        return learners[key]
    return get


@pytest.fixture(scope='session')
def sample_dls():
    "4 vs 8 from the bundled sample, seeded"
    return BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=42)


@pytest.fixture(scope='session')
def sample_png(tmp_path_factory):
    "The bundled sample's 4s and 8s written as fastai's mnist_png (real PNG files)"
    return write_mnist_png(tmp_path_factory.mktemp('sample_png')/'mnist_png', sample=True, digits=(4, 8))


@pytest.fixture(scope='session')
def full_png_home(tmp_path_factory, idx_dir):
    "A FASTAI_HOME whose data/mnist_png holds the full set's 4s and 8s as PNGs, as `untar_data(URLs.MNIST)` leaves it"
    home = tmp_path_factory.mktemp('fastai_home_full')
    write_mnist_png(home/'data'/'mnist_png', path=idx_dir, digits=(4, 8))
    return home


@pytest.fixture
def fastai_home(monkeypatch, tmp_path):
    "An empty FASTAI_HOME for this test, with downloads sent to a closed local port so they fail at once"
    from fastai.data.external import fastai_cfg
    monkeypatch.setenv('FASTAI_HOME', str(tmp_path/'fastai_home'))
    for v in ('https_proxy', 'http_proxy', 'HTTPS_PROXY', 'HTTP_PROXY'): monkeypatch.setenv(v, 'http://127.0.0.1:9')
    monkeypatch.delenv('no_proxy', raising=False); monkeypatch.delenv('NO_PROXY', raising=False)
    fastai_cfg.cache_clear()  # fastai reads FASTAI_HOME once per process (`lru_cache`): let it read this one
    yield tmp_path/'fastai_home'
    fastai_cfg.cache_clear()


@pytest.fixture
def fast_paths_on():
    """The tests that compare the fast paths with fastai's own need them on: fastai's code here is the code they mirror
    (`fastai_internals.MIRRORED`); on a release that changes it, these tests are how a new fingerprint is earned"""
    from fastai_binary_digits.fastai_internals import changed_code
    changed = changed_code()
    assert not changed, (f"fastai's (or torch's) {', '.join(changed)} changed: check the fast paths against it, then add "
                         "its fingerprint (`fastai_internals.fingerprint`) to `MIRRORED`")


@contextmanager
def time_limit(seconds:float, what:str='the block'):
    "Raise `TimeoutError` in this (main) thread when the block runs longer than `seconds`: a hang fails, never waits"
    def stop(*_): raise TimeoutError(f'{what} took more than {seconds} s')
    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try: yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)

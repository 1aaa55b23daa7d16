"Fixtures: the bundled sample, a staged FASTAI_HOME, and the full MNIST set when CI passes its location in"
import os
from pathlib import Path

import pytest

from fastai_binary_digits import BinaryDigitsDataLoaders
from fastai_binary_digits.mnist import write_mnist_png

IDX_ENV = 'MNIST_IDX_DIR'  # folder holding the four original MNIST IDX files; CI sets it, tests needing it skip without


def _idx_dir():
    d = os.environ.get(IDX_ENV)
    return Path(d) if d and any((Path(d)/f'train-images-idx3-ubyte{ext}').exists() for ext in ('', '.gz')) else None


@pytest.fixture(scope='session')
def idx_dir():
    "The full MNIST IDX files, or skip"
    d = _idx_dir()
    if d is None: pytest.skip(f"the full MNIST set is absent: set {IDX_ENV} to a folder holding the four IDX files")
    return d


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

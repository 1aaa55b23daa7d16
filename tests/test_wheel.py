"""The wheel: built from the repository (offline), it carries the bundled sample and the console script; installed
into a fresh virtual environment that reuses this interpreter's torch and fastai, it trains and imports from outside
the repository"""
import configparser, importlib.util, os, shutil, site, subprocess, sys, sysconfig, zipfile
from pathlib import Path

import pytest

import fastai_binary_digits
from fastai_binary_digits.mnist import SAMPLE_PATH

ROOT = Path(__file__).resolve().parent.parent
PKG = 'fastai_binary_digits'


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert res.returncode == 0, (f'{cmd} exited {res.returncode}\nstdout:\n{res.stdout[-3000:]}\n'
                                 f'stderr:\n{res.stderr[-3000:]}')
    return res


@pytest.fixture(scope='module')
def built(tmp_path_factory) -> tuple:
    """The wheel, built from a copy of the repository's files (so that no build/ or egg-info is left in the checkout),
    and what the build printed"""
    tmp = tmp_path_factory.mktemp('wheel')
    src, dist = tmp/'src', tmp/'dist'
    src.mkdir()
    for f in ROOT.iterdir():
        if f.is_file(): shutil.copy2(f, src/f.name)  # pyproject.toml, README.md, LICENSE, ...
    shutil.copytree(ROOT/PKG, src/PKG, ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '.*'))
    if importlib.util.find_spec('build'):
        cmd = [sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir', dist, src]
    else:
        cmd = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-w', dist, src]
    res = run(cmd + ['-v'] if 'pip' in cmd else cmd, cwd=tmp)  # pip shows setuptools' warnings with -v only
    wheels = list(dist.glob('*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0], res.stdout + res.stderr


@pytest.fixture(scope='module')
def wheel(built) -> Path: return built[0]


def test_build_prints_no_setuptools_warning_about_the_sample(built):
    "The sample's folder is a package of data files that setuptools finds (`packages.find`), not a warning of 35 lines"
    _, log = built
    assert 'setuptools' in log or 'wheel' in log.lower()  # what the build printed, not an empty capture
    assert 'fastai_binary_digits.sample_data' not in log, log[-3000:]


def test_wheel_carries_the_sample_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {f'{PKG}/{m}.py' for m in ('__init__', '__main__', 'cli', 'data', 'mnist', 'learner')} <= names
        sample = sorted(SAMPLE_PATH.glob('*.gz'))
        assert len(sample) == 6  # images, labels and indices of both splits
        for f in sample: assert z.read(f'{PKG}/sample_data/{f.name}') == f.read_bytes()
        dist_info = next(n.split('/')[0] for n in names if n.endswith('.dist-info/METADATA'))
        meta = z.read(f'{dist_info}/METADATA').decode()
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(f'{dist_info}/entry_points.txt').decode())
    assert 'Name: fastai-binary-digits' in meta and f'Version: {fastai_binary_digits.__version__}' in meta
    assert dict(entry_points['console_scripts']) == {'fastai-binary-digits': 'fastai_binary_digits.cli:main'}
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel. It reuses this interpreter's packages (torch, fastai): `--system-site-packages`
    where this interpreter is a system Python, and a `.pth` line for its site-packages where it is itself a venv (whose
    packages `--system-site-packages` would not see). A `.pth` line adds a folder to `sys.path` after the venv's own
    site-packages without running that folder's `.pth` files, so an editable install there does not shadow the wheel."""
    d = tmp_path_factory.mktemp('venv')/'venv'
    run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', d])
    py = d/'bin'/'python'
    purelib = Path(run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip())
    ours = [p for p in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()['purelib']]) if Path(p).is_dir()]
    (purelib/'_reuse_test_interpreter.pth').write_text('\n'.join(ours) + '\n')
    run([sys.executable, '-m', 'pip', '--python', py, 'install', '--no-deps', '--no-index', '--no-cache-dir', wheel])
    return d


def _env():
    "This environment, without anything that would put the checkout on `sys.path`"
    return {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP')}


def test_import_from_outside_the_repo_uses_the_wheel(venv, tmp_path):
    code = ("import fastai_binary_digits as m, torch, fastai\n"
            "from fastai_binary_digits.mnist import SAMPLE_PATH\n"
            "print(m.__file__); print(SAMPLE_PATH); print(m.__version__); print(len(m.__all__))\n")
    out = run([venv/'bin'/'python', '-c', code], cwd=tmp_path, env=_env()).stdout.split('\n')
    module, sample = Path(out[0]).resolve(), Path(out[1]).resolve()
    assert module.is_relative_to(venv.resolve()) and not module.is_relative_to(ROOT), module
    assert sample.is_relative_to(venv.resolve()) and len(list(sample.glob('*.gz'))) == 6
    assert out[2] == fastai_binary_digits.__version__ and int(out[3]) == len(fastai_binary_digits.__all__)


def test_console_script_trains_on_the_bundled_sample(venv, tmp_path):
    script = venv/'bin'/'fastai-binary-digits'
    assert script.read_text().startswith(f'#!{venv/"bin"/"python"}')
    res = run([script, 'train', '--sample', '--epochs', 1], cwd=tmp_path, env=_env())  # writes model.safetensors
    assert 'Training linear on 3 vs 7 from the bundled sample' in res.stdout
    assert any(l.split()[:4] == ['epoch', 'train_loss', 'valid_loss', 'batch_accuracy'] for l in res.stdout.split('\n'))
    assert (tmp_path/'model.safetensors').stat().st_size > 1000
    assert 'Traceback' not in res.stderr

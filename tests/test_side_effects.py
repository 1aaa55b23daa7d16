"""Global side effects only where the user asked: importing any module of the package changes nothing of fastai's, of
the warning filters or of the process; the process group fastai's `distrib_ctx` starts is destroyed, a user's never"""
import subprocess, sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
JIT = '`torch.jit.script` is deprecated'


def _python(code:str, *args) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter (the package imported from this checkout); fail the test if it fails"
    p = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_fastai_imports_warn_without_the_package():
    "What the package hides is real: importing fastai's learner warns that `torch.jit.script` is deprecated"
    if JIT not in _python("import warnings; warnings.simplefilter('default'); import fastai.learner").stderr:
        pytest.skip(f"this torch and fastai do not warn '{JIT}' on import: nothing for the package to hide")


def test_import_leaves_the_warning_filters_as_they_were():
    "The package adds no filter of its own: after its import the filters are those that importing fastai itself leaves"
    fastai_modules = _python("import sys; from fastai_binary_digits import *\n"
                             "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('fastai', 'fastcore')))"
                             ).stdout.split()
    p = _python(
        "import warnings, importlib\n"
        "warnings.simplefilter('default')  # every warning shown once, as `python -W default`\n"
        f"for m in {fastai_modules!r}: importlib.import_module(m)  # fastai's own filters, as any fastai user gets them\n"
        "before = list(warnings.filters)\n"
        "import fastai_binary_digits\n"
        "from fastai_binary_digits import *\n"
        "assert warnings.filters == before, 'the filters changed'\n"
        "print('filters unchanged')\n")
    assert 'filters unchanged' in p.stdout
    p = _python(
        "import warnings\n"
        "warnings.simplefilter('default')\n"
        "from fastai_binary_digits import *\n"
        "import fastai.interpret, fastai.distributed  # what the package imports later, when asked\n"
        f"warnings.warn({JIT!r}, FutureWarning)  # the same message from the user's own code still shows\n")
    assert p.stderr.count(JIT) == 1 and '<string>' in p.stderr  # the user's warning, not fastai's import


def test_import_keeps_the_users_own_filters():
    p = _python(
        "import warnings\n"
        "warnings.filterwarnings('error', message='.*deprecated.*', category=FutureWarning)  # the user's choice\n"
        "before = list(warnings.filters)\n"
        "import fastai_binary_digits\n"
        "assert warnings.filters == before\n"
        "try: warnings.warn('torch.jit.script is deprecated', FutureWarning)\n"
        "except FutureWarning: print('still an error')\n")
    assert 'still an error' in p.stdout


needs_accelerate = pytest.mark.skipif(find_spec('accelerate') is None, reason="fastai's distrib_ctx needs Hugging "
                                      "Face Accelerate: pip install 'fastai-binary-digits[distributed]'")
needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="this PyTorch build has no torch.distributed with the gloo backend")


@needs_accelerate
@needs_gloo
def test_exit_leaves_a_process_group_the_user_made(tmp_path):
    "A user's own group (one process, gloo) stays up through training, `distrib_ctx`, and the package's exit handler"
    out = tmp_path/'after_exit.txt'
    _python(
        "import atexit, sys, torch, torch.distributed as dist\n"
        "from pathlib import Path\n"
        "out, store = Path(sys.argv[1]), sys.argv[2]\n"
        "def check():  # registered before the package's exit handler, so it runs after it\n"
        "    ok = dist.is_initialized()\n"
        "    if ok:\n"
        "        t = torch.ones(2); dist.all_reduce(t); ok = t.tolist() == [1.0, 1.0]  # still usable\n"
        "        dist.destroy_process_group()\n"
        "    out.write_text(str(ok))\n"
        "atexit.register(check)\n"
        "dist.init_process_group('gloo', init_method=f'file://{store}', rank=0, world_size=1)\n"
        "from fastai_binary_digits import *\n"
        "from fastai_binary_digits.distributed import distrib_ctx_if_launched\n"
        "dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0)\n"
        "learn = binary_learner(dls, seed=0)\n"
        "with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(cpu=True): learn.fit(1)\n"
        "with distrib_ctx_if_launched(learn): learn.validate()\n"
        "assert dist.is_initialized() and dist.get_world_size() == 1\n", out, tmp_path/'store')
    assert out.read_text() == 'True'


@needs_accelerate
def test_importing_any_module_patches_and_registers_nothing():
    "fastai's `DistributedDL`, the exit handlers, the environment and fastprogress: as they were, whatever is imported"
    p = _python(
        "import atexit, os, importlib, pkgutil\n"
        "import fastai.distributed, fastprogress.fastprogress as fp\n"
        "from fastai.distributed import DistributedDL\n"
        "before = (DistributedDL._broadcast, atexit._ncallbacks(), dict(os.environ), fp.NO_BAR, fp.ConsoleProgressBar.fill)\n"
        "import fastai_binary_digits as pkg\n"
        "for m in pkgutil.iter_modules(pkg.__path__): importlib.import_module(f'fastai_binary_digits.{m.name}')\n"
        "from fastai_binary_digits import *\n"
        "after = (DistributedDL._broadcast, atexit._ncallbacks(), dict(os.environ), fp.NO_BAR, fp.ConsoleProgressBar.fill)\n"
        "assert before == after, (before, after)\n"
        "print('unchanged')\n")
    assert 'unchanged' in p.stdout


def test_a_submodule_imported_first_works():
    "`from fastai_binary_digits.scratch import *` before anything else, as the README shows"
    p = _python("from fastai_binary_digits.scratch import *\n"
                "from fastai_binary_digits.learner import binary_learner\n"
                "print(init_params((3, 1)).shape)\n")
    assert 'torch.Size([3, 1])' in p.stdout


@needs_accelerate
@needs_gloo
def test_exit_destroys_the_group_fastais_distrib_ctx_started(tmp_path):
    "A group started inside `learn.distrib_ctx()` (as Accelerate does) is destroyed at exit, not left to gloo's threads"
    out = tmp_path/'after_exit.txt'
    _python(
        "import atexit, sys, torch.distributed as dist\n"
        "from contextlib import contextmanager\n"
        "from pathlib import Path\n"
        "from fastai.learner import Learner\n"
        "import fastai.distributed\n"
        "out, store = Path(sys.argv[1]), sys.argv[2]\n"
        "atexit.register(lambda: out.write_text(str(dist.is_initialized())))  # runs after the package's handler\n"
        "@contextmanager\n"
        "def accelerate_like(self, *args, **kwargs):  # starts a group and leaves it up, as fastai's does\n"
        "    dist.init_process_group('gloo', init_method=f'file://{store}', rank=0, world_size=1)\n"
        "    yield self\n"
        "Learner.distrib_ctx = accelerate_like\n"
        "from fastai_binary_digits import *\n"
        "learn = binary_learner(BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0))\n"
        "with learn.distrib_ctx(cpu=True): pass\n"
        "assert dist.is_initialized()  # fastai leaves it up after the context, so that it can still gather\n",
        out, tmp_path/'store')
    assert out.read_text() == 'False'

"fastai's `learn.distrib_ctx()` (Accelerate, DDP) on CPU backends (gloo) too, and one that needs `torchrun` to start"
import atexit, hashlib, os
from contextlib import contextmanager
from importlib.util import find_spec

import torch
from fastai.learner import Learner
from fastai.torch_core import num_distrib

from .checks import BinaryDigitsError
from .fastai_internals import broadcasts_on_cpu

__all__ = ['distrib_ctx', 'distrib_ctx_if_launched', 'alone', 'require_accelerate']


def require_accelerate():
    "A clear error when Hugging Face Accelerate, which fastai's `distrib_ctx` uses, is not installed"
    if find_spec('accelerate') is None:
        raise ModuleNotFoundError("Distributed training needs Hugging Face Accelerate, which fastai's `distrib_ctx` "
                                  "uses: pip install accelerate", name='accelerate')


def _group():
    "The default process group, or None"
    dist = torch.distributed
    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


def _destroy(group):
    "Destroy `group` if it is still the default process group (a user's own group is never touched)"
    if group is not None and _group() is group: torch.distributed.destroy_process_group()


@contextmanager
def distrib_ctx(learn:Learner, *args, **kwargs):
    "fastai's `learn.distrib_ctx()` on gloo too; the group it started is destroyed at exit, or gloo can abort the exit"
    require_accelerate()
    import fastai.distributed  # adds `Learner.distrib_ctx`
    before = _group()
    try:
        with broadcasts_on_cpu(), Learner.distrib_ctx(learn, *args, **kwargs) as res: yield res
    finally:
        started = _group()
        if before is None and started is not None: atexit.register(_destroy, started)


def _fingerprint(dl) -> str:
    "A hash of the images and labels of `dl`, in order"
    ds, h = dl.dataset, hashlib.sha1()
    for t in (ds.x, ds.y):
        if t is not None: h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_same_data(dls):
    "Fail, in every process at once, unless all processes hold the same images: `DistributedDL` shares out indices"
    mine = [_fingerprint(dl) for dl in dls.loaders[:2]]
    every = [None]*num_distrib()
    torch.distributed.all_gather_object(every, mine)
    if any(o != mine for o in every):
        raise BinaryDigitsError("The processes hold different training or validation images, so they would not share "
                                "out one epoch: make the loaders with the same `seed` in every process (`--seed N` on "
                                "the command line), as the random validation split depends on it")


@contextmanager
def distrib_ctx_if_launched(learn:Learner, **kwargs):
    "`learn.distrib_ctx(**kwargs)` under `torchrun` (GPUs or gloo), else nothing; destroys only the group it started"
    if num_distrib() <= 1:
        yield learn
        return
    kwargs.setdefault('cpu', not torch.cuda.is_available())
    before = _group()
    try:
        with distrib_ctx(learn, **kwargs):
            learn.dls.to(learn.distributed_trainer.accelerator.device)  # each rank's tensors on its own device (GPU i)
            _check_same_data(learn.dls)
            yield learn
    finally:
        if before is None: _destroy(_group())


@contextmanager
def alone():
    "Inside, a distributed run's processes go on alone: `WORLD_SIZE` is 1, so fastai gathers no predictions or metrics"
    before = os.environ.get('WORLD_SIZE')
    os.environ['WORLD_SIZE'] = '1'
    try: yield
    finally:
        if before is None: del os.environ['WORLD_SIZE']
        else: os.environ['WORLD_SIZE'] = before

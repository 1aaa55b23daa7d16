"""Distributed training with fastai's own engine (`learn.distrib_ctx()`: Hugging Face Accelerate and PyTorch DDP).
The package adds no machinery of its own: one narrow fix that CPU training (gloo) needs, and a context for scripts
and the command line that goes distributed only when launched by `torchrun`."""
from __future__ import annotations
import atexit, hashlib, os
from contextlib import contextmanager
from importlib.util import find_spec

import torch
from . import compat  # first: it imports fastai with fastai's import-time warning hidden
from fastai.learner import Learner
from fastai.torch_core import num_distrib

__all__ = ['distrib_ctx_if_launched']

_CPU_BACKENDS = ('gloo', 'mpi')  # process-group backends that send CPU tensors (NCCL sends only CUDA tensors)


def _cpu_broadcast(t:list, rank:int) -> list:
    "Broadcast the list of ints `t` from `rank` to every rank through a CPU tensor; returns rank `rank`'s list"
    t = torch.tensor(t, dtype=torch.long)
    torch.distributed.broadcast(t, rank)
    return t.tolist()


def _fix_distributed_dl():
    """fastai's `DistributedDL._broadcast` moves the epoch's indices to CUDA unconditionally (`.cuda()`, for NCCL), which
    fails on a CPU-only machine and is not needed by gloo or MPI. Patch it to keep the indices on the CPU when the process
    group's backend is one of those; with any other backend (NCCL) fastai's own `_broadcast` runs, unchanged."""
    from fastai.distributed import DistributedDL
    fastai_broadcast = DistributedDL._broadcast
    if getattr(fastai_broadcast, '_cpu_backends', None): return  # already patched
    def _broadcast(self, t, rank):
        if torch.distributed.get_backend() in _CPU_BACKENDS: return _cpu_broadcast(t, rank)
        return fastai_broadcast(self, t, rank)
    _broadcast.__doc__ = f"{fastai_broadcast.__doc__} (On CPU backends {_CPU_BACKENDS}, the indices stay on the CPU.)"
    _broadcast._cpu_backends = _CPU_BACKENDS
    DistributedDL._broadcast = _broadcast


_HAS_ACCELERATE = find_spec('accelerate') is not None  # `fastai.distributed` needs it: the `distributed` extra
if _HAS_ACCELERATE: _fix_distributed_dl()

_STARTED = []  # the process group fastai's `distrib_ctx` started through the package (Accelerate), if any


def _group():
    "The default process group, or None"
    dist = torch.distributed
    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


@contextmanager
def noting_process_group():
    """Note the process group that starts inside this context (fastai's `distrib_ctx`, through Accelerate), so that
    `teardown_started` destroys it; a group already up when the context starts (the user's) is never noted"""
    before = _group()
    try: yield
    finally:
        after = _group()
        if before is None and after is not None and not any(after is g for g in _STARTED): _STARTED.append(after)


def teardown_started():
    "Destroy the process group fastai's `distrib_ctx` started through the package, if it is still up; never another"
    g = _group()
    if g is not None and any(g is o for o in _STARTED): torch.distributed.destroy_process_group()
    _STARTED.clear()


# fastai's `distrib_ctx` leaves the process group Accelerate started alive, so fastai can still gather after it; left to
# interpreter shutdown, gloo's worker threads can then abort a run that trained well (SIGABRT, "terminate called without
# an active exception"). Destroyed while Python is still whole; a group the user made is the user's to destroy.
atexit.register(teardown_started)


def require_accelerate():
    "A clear error when Hugging Face Accelerate, which fastai's `distrib_ctx` uses, is not installed"
    if not _HAS_ACCELERATE:
        raise ModuleNotFoundError("Distributed training needs Hugging Face Accelerate, which fastai's `distrib_ctx` "
                                  "uses: pip install accelerate", name='accelerate')


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
        raise ValueError("The processes hold different training or validation images, so they would not share out one "
                         "epoch: make the loaders with the same `seed` in every process (`--seed N` on the command "
                         "line), as the random validation split depends on it")


@contextmanager
def distrib_ctx_if_launched(learn:Learner, **kwargs):
    """`learn.distrib_ctx()` when this process is one of several launched by `torchrun` (`WORLD_SIZE` > 1), on the GPUs
    when there are some and on the CPU (gloo) otherwise; nothing when it runs alone. `kwargs` go to `distrib_ctx`.
    On leaving, the processes part: each holds the trained model and goes on alone (`WORLD_SIZE` becomes 1, since fastai
    gathers every prediction and metric across processes while it is above 1); `rank_distrib()` still tells rank 0.
    The process group the context started is destroyed; one the user made before stays up."""
    if num_distrib() <= 1:
        yield learn
        return
    require_accelerate()
    import fastai.distributed  # adds `Learner.distrib_ctx`
    kwargs.setdefault('cpu', not torch.cuda.is_available())
    try:
        with noting_process_group(), learn.distrib_ctx(**kwargs):
            learn.dls.to(learn.distributed_trainer.accelerator.device)  # each rank's tensors on its own device (GPU i)
            _check_same_data(learn.dls)
            yield learn
    finally:
        teardown_started()  # the group started here; one the user made stays up
        os.environ['WORLD_SIZE'] = '1'

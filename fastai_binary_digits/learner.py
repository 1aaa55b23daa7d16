"`binary_learner`: a fastai `Learner` for a pair of digits, with the book's loss, metric and optimizer"
from __future__ import annotations
import random
from operator import attrgetter
from pathlib import Path

import torch
from torch import Tensor, nn
from fastcore.meta import delegates
from fastai.callback.core import event
import fastai.callback.progress  # adds fastai's progress bars and table to every Learner's default callbacks
import fastai.callback.schedule  # adds `fit_one_cycle` and `lr_find` to `Learner`
from fastai.learner import Learner
from fastai.optimizer import SGD, Optimizer
from fastai.torch_core import defaults, num_distrib, rank_distrib, set_seed
from fastcore.foundation import L

from .data import BinaryDigitsDL, _on, check_device
from .files import atomic_path
from .optimizer import SGDOptimizer, _RECIPES as _SGD_RECIPES
from .losses import batch_accuracy, mnist_loss
from .models import ARCHS

__all__ = ['BinaryLearner', 'binary_learner', 'get_model']


class BinaryLearner(Learner):
    """A fastai `Learner` with a lighter step: per event it calls only the callbacks that define it (fastai asks every
    one, every time), leaves batches already on the model's device as they are, and steps fastai's `SGD` per group"""

    def __call__(self, event_name):
        if isinstance(event_name, str): self._call_one(event_name)
        else: L(event_name).map(self._call_one)

    def _call_one(self, event_name:str):
        cbs = tuple(self.cbs.items)
        key = (event_name, cbs, tuple(map(_order, cbs)))  # any change to the callbacks or their order is a new key
        dispatch = self.__dict__.setdefault('_dispatch', {})
        todo = dispatch.get(key)
        if todo is None:
            if not hasattr(event, event_name): raise Exception(f'missing {event_name}')
            if len(dispatch) > 512: dispatch.clear()
            # `after_fit` goes to every callback: `Callback.__call__` resets its `run` flag there
            todo = dispatch[key] = tuple(cb for cb in sorted(cbs, key=lambda cb: cb.order)
                                         if event_name == 'after_fit' or _defines(cb, event_name))
        for cb in todo: cb(event_name)

    def _set_device(self, b):
        "fastai's `_set_device`: `b` on the model's device (where fastai's two branches both send it)"
        if defaults.use_cuda != False and _on(b, next(self.model.parameters()).device): return b
        return super()._set_device(b)

    def to_detach(self, b, cpu:bool=True, gather:bool=True):
        "fastai's `to_detach`, without its recursion for a single tensor from our loaders outside distributed training"
        dl = self.__dict__.get('dl')
        if type(b) is Tensor and type(dl) is BinaryDigitsDL and not (gather and num_distrib() > 1):
            b = b.detach()
            return b.cpu() if cpu else b
        return super().to_detach(b, cpu, gather)

    def create_opt(self):
        "fastai's `create_opt`; an optimizer made of fastai's `SGD` callbacks then steps each group in batched updates"
        super().create_opt()
        if type(self.opt) is Optimizer and tuple(self.opt.cbs) in _SGD_RECIPES:
            self.opt.__class__ = SGDOptimizer  # the same object and state: `SGDOptimizer` only overrides `step`, `zero_grad`

    def distrib_ctx(self, *args, **kwargs):
        "fastai's `distrib_ctx`, after the package's fix that lets fastai's `DistributedDL` run on CPU backends (gloo)"
        from .distributed import require_accelerate  # importing it applies the fix
        require_accelerate()
        import fastai.distributed  # adds `Learner.distrib_ctx`
        return Learner.distrib_ctx(self, *args, **kwargs)

    def export(self, fname:str|Path='export.pkl', **kwargs):
        """fastai's `export` (a pickle), written to a temporary file then renamed, so an existing export is never left
        half-written; to a name ending in '.safetensors', the safe format instead (`export_binary_learner`)"""
        if rank_distrib(): return  # as fastai: only the main process exports
        if Path(fname).suffix.lower() == '.safetensors':
            from .model_files import export_binary_learner  # (model_files builds on this module)
            if kwargs: raise TypeError(f"{', '.join(kwargs)} apply to fastai's pickle export, not to '.safetensors'")
            return export_binary_learner(self, fname)
        self.__dict__.pop('_dispatch', None)
        with atomic_path(self.path/fname) as tmp: super().export(tmp, **kwargs)  # `tmp` is absolute: `path/tmp` is `tmp`


_order = attrgetter('order')


def _defines(cb, event_name:str) -> bool:
    "Whether `cb` has its own `event_name` (on its class or the instance), not one found through `GetAttr` delegation"
    return event_name in cb.__dict__ or any(event_name in k.__dict__ for k in type(cb).__mro__)


def get_model(arch) -> nn.Module:
    "A fresh model from `arch`: a name in `ARCHS`, a function returning an `nn.Module`, or an `nn.Module`"
    if isinstance(arch, nn.Module): return arch
    if isinstance(arch, str):
        name = arch.removesuffix('_net').removesuffix('_model')
        if name not in ARCHS:
            raise ValueError(f"Unknown `arch` {arch!r}: use one of {', '.join(map(repr, ARCHS))}, a function returning "
                             "an nn.Module, or an nn.Module")
        return ARCHS[name]()
    if callable(arch):
        model = arch()
        if not isinstance(model, nn.Module):
            raise TypeError(f"`arch` {arch!r} returned a {type(model).__name__}, not an nn.Module")
        return model
    raise TypeError(f"`arch` must be a name ({', '.join(ARCHS)}), a function returning an nn.Module, or an nn.Module; "
                    f"got a {type(arch).__name__}")


def _check_output(model:nn.Module, x:torch.Tensor):
    "Fail early, and clearly, when the model does not map (bs, 784) to (bs, 1)"
    was_training = model.training
    try:
        with torch.no_grad(): out = model.eval()(x)
    except Exception as e:
        raise ValueError(f"The model failed on a batch of shape {tuple(x.shape)} (flattened 28x28 digits): {e}") from e
    finally: model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), 1):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"The model must return one output per image, shape (bs, 1); on a batch of shape "
                         f"{tuple(x.shape)} it returned {shape}")


@delegates(Learner.__init__, but=['dls', 'model', 'loss_func', 'opt_func', 'lr', 'metrics'])
def binary_learner(dls,
    arch='linear',                # 'linear', 'simple', 'deep', 'cnn', a function returning an nn.Module, or an nn.Module
    loss_func=mnist_loss,         # the book's loss; `log_loss` or fastai's `BCEWithLogitsLossFlat()` work too
    opt_func=SGD,                 # fastai's SGD, as the book
    lr:float=0.1,                 # default learning rate for `fit` and `fit_one_cycle`
    metrics=batch_accuracy,       # metric(s) shown in fastai's table
    seed:int|None=None,           # seed the initial weights and the loaders' shuffling: same seed, same table
    device=None,                  # where to train; None: where the data is
    **kwargs,
) -> BinaryLearner:
    "A `Learner` for `dls` (a `BinaryDigitsDataLoaders`) with the book's loss, metric and SGD"
    if seed is not None:
        set_seed(seed)
        for i, dl in enumerate(dls.loaders): dl.rng = random.Random(seed + i)
    model = get_model(arch)
    if device is not None:
        device = check_device(device)
        dls.to(device)
    else: device = getattr(dls, 'device', None) or check_device(None)
    model.to(device)
    _check_output(model, dls.train.dataset.x[:2].to(device))
    return BinaryLearner(dls, model, loss_func=loss_func, opt_func=opt_func, lr=lr, metrics=metrics, **kwargs)

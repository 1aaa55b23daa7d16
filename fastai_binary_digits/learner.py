"`binary_learner`: a fastai `Learner` for a pair of digits, with the book's loss, metric and optimizer"
from __future__ import annotations
import random
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from .compat import fast_paths_checked
from fastcore.meta import delegates
import fastai.callback.progress  # adds fastai's progress bars and table to every Learner's default callbacks
import fastai.callback.schedule  # adds `fit_one_cycle` and `lr_find` to `Learner`
from fastai.learner import Learner
from fastai.optimizer import SGD, Optimizer
from fastai.torch_core import defaults, num_distrib, rank_distrib, set_seed
from fastcore.foundation import L

from .data import BinaryDigitsDL, DigitTensors, _on, check_device
from .dispatch import call_event
from .files import atomic_path
from .prepare import NoDigitError
from .optimizer import SGDOptimizer, sgd_recipe
from .losses import batch_accuracy, mnist_loss
from .models import ARCHS

__all__ = ['BinaryLearner', 'binary_learner', 'get_model']


class BinaryLearner(Learner):
    """A fastai `Learner` with a lighter step: per event it skips the callbacks proven not to handle it (fastai asks
    every one, every time), leaves batches already on the model's device as they are, and steps fastai's `SGD` a
    parameter group at a time. `fast=False`, or a fastai or torch version they are not checked on
    (`fastai_binary_digits.compat`), gives fastai's own code paths"""
    fast = True  # learners exported before `fast` existed are fast

    @delegates(Learner.__init__)
    def __init__(self, dls, model, *args, fast:bool=True, **kwargs):
        self.fast = fast  # False: fastai's own code paths
        super().__init__(dls, model, *args, **kwargs)

    def _fast(self) -> bool: return self.fast and fast_paths_checked()

    def __call__(self, event_name):
        if not self._fast(): return Learner.__call__(self, event_name)
        if isinstance(event_name, str): self._call_one(event_name)
        else: L(event_name).map(self._call_one)

    def _call_one(self, event_name:str):
        if self._fast() and type(self.cbs) is L: call_event(self, event_name)
        else: Learner._call_one(self, event_name)

    def _set_device(self, b):
        "fastai's `_set_device`: `b` on the model's device (where fastai's two branches both send it)"
        if self._fast() and defaults.use_cuda != False and _on(b, next(self.model.parameters()).device): return b
        return super()._set_device(b)

    def to_detach(self, b, cpu:bool=True, gather:bool=True):
        "fastai's `to_detach`, without its recursion for a single tensor from our loaders outside distributed training"
        if type(b) is Tensor and not (gather and num_distrib() > 1) and self._fast() and _no_to_detach(self.__dict__.get('dl')):
            b = b.detach()
            return b.cpu() if cpu else b
        return super().to_detach(b, cpu, gather)

    def create_opt(self):
        "fastai's `create_opt`; an optimizer made of fastai's `SGD` callbacks then steps each group in batched updates"
        super().create_opt()
        if self._fast() and type(self.opt) is Optimizer and sgd_recipe(self.opt.cbs) is not None:
            self.opt.__class__ = SGDOptimizer  # the same object and state: `SGDOptimizer` only overrides `step`, `zero_grad`

    @contextmanager
    def distrib_ctx(self, *args, **kwargs):
        "fastai's `distrib_ctx`, after the package's fix that lets fastai's `DistributedDL` run on CPU backends (gloo)"
        from .distributed import require_accelerate, noting_process_group  # importing it applies the fix
        require_accelerate()
        import fastai.distributed  # adds `Learner.distrib_ctx`
        with noting_process_group(), Learner.distrib_ctx(self, *args, **kwargs) as learn: yield learn

    def predict(self, item, rm_type_tfms=None, with_input:bool=False):
        """fastai's `predict`: `(digit, label, probability of vocab[1])` for one image, made to look like MNIST's as
        `dls.test_dl` does; raises `NoDigitError` when it holds no digit (blank, one colour, noise)"""
        dl = self.dls.test_dl([item], rm_type_tfms=rm_type_tfms, num_workers=0)
        if not bool(getattr(dl, 'found', (True,))[0]):
            raise NoDigitError("No digit found in the image: it looks blank, one colour or noise. Give a picture of "
                               "one digit (see `prepare_digit` and `show_prepared`)")
        inp, preds, _, dec_preds = self.get_preds(dl=dl, with_input=True, with_decoded=True)
        dec = self.dls.decode_batch((inp, dec_preds))[0]  # as fastai's, for one input
        res = dec[1], dec_preds[0], preds[0]
        return (dec[0],) + res if with_input else res

    def export(self, fname:str|Path='export.pkl', **kwargs):
        """fastai's `export` (a pickle), written to a temporary file then renamed, so an existing export is never left
        half-written; to a name ending in '.safetensors', the safe format instead (`export_binary_learner`)"""
        if rank_distrib(): return  # as fastai: only the main process exports
        if Path(fname).suffix.lower() == '.safetensors':
            from .model_files import export_binary_learner  # (model_files builds on this module)
            if kwargs: raise TypeError(f"{', '.join(kwargs)} apply to fastai's pickle export, not to '.safetensors'")
            return export_binary_learner(self, fname)
        with atomic_path(Path(self.path).expanduser()/Path(fname).expanduser()) as tmp: super().export(tmp, **kwargs)  # `tmp` is absolute: `path/tmp` is `tmp`


def _no_to_detach(dl) -> bool:
    "Whether `dl` is one of our loaders, over our tensors, without a `to_detach` (then fastai calls its own function)"
    if type(dl) is not BinaryDigitsDL or type(dl.__dict__.get('dataset')) is not DigitTensors: return False
    ds = dl.dataset  # `dl.to_detach` would be looked up on the loader, then on its dataset (`GetAttr`)
    return not (any(k in dl.__dict__ for k in ('to_detach', '_default', '_xtra')) or 'to_detach' in ds.__dict__
                or hasattr(BinaryDigitsDL, 'to_detach') or hasattr(DigitTensors, 'to_detach'))


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
    fast:bool=True,               # the package's fast paths, where the installed fastai and torch are checked; False: fastai's own
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
    if not fast:  # fastai's own code paths, the loaders' too
        for dl in dls.loaders:
            if isinstance(dl, BinaryDigitsDL): dl.fast = False
    return BinaryLearner(dls, model, loss_func=loss_func, opt_func=opt_func, lr=lr, metrics=metrics, fast=fast, **kwargs)

"`binary_learner`: a fastai `Learner` for a pair of digits, with the book's loss, metric and optimizer; and its files"
import random
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from fastcore.meta import delegates
import fastai.callback.progress  # adds fastai's progress bars and table to every Learner's default callbacks
import fastai.callback.schedule  # adds `fit_one_cycle` and `lr_find` to `Learner`
from fastai.data.transforms import CategoryMap
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam
from fastai.torch_core import default_device, rank_distrib, set_seed

from .checks import SAFE_SUFFIX, BinaryDigitsError, check_device, check_model_suffix, existing_model_file
from .data import BinaryDigitsDataLoaders, BinaryDigitsDL, DigitsDataset
from .distributed import distrib_ctx
from .fastai_internals import FastLearner
from .files import atomic_path
from .losses import batch_accuracy, log_loss, mnist_loss
from .model_files import export_binary_learner, load_pickle, read_model_file
from .models import ARCHS
from .pair_check import NotInPairError, PairCheck, check_net, pair_check_dls
from .prepare import ManyDigitsError, NoDigitError

__all__ = ['BinaryLearner', 'binary_learner', 'get_model', 'load_binary_learner', 'load_model_file',
           'export_binary_learner']


class BinaryLearner(FastLearner):
    "A fastai `Learner` of two digits: `predict` prepares a person's picture and checks it, `export` writes safe files"

    @property
    def pair_check(self) -> PairCheck|None:
        "The check that says when an image is not one of the pair's digits (`fit_pair_check`), or None: it has none"
        return getattr(self.dls, 'pair_check', None)

    @pair_check.setter
    def pair_check(self, check:PairCheck|None): self.dls.pair_check = check

    def fit_pair_check(self,
        epochs:int=5,                 # epochs of `fit_one_cycle`
        lr:float=2e-2,                # its maximum learning rate (Adam)
        dls=None,                     # the check's loaders; None: `pair_check_dls(learn.dls)`
        target:float=0.99,            # share of the pair's validation digits that must pass
        seed:int|None=None,           # seed the initial weights and the shuffling
        quiet:bool=False,             # train without fastai's progress bars and table
    ) -> 'BinaryLearner':
        """Train `check_net` on the pair's digits against MNIST's other eight (`pair_check_dls`), calibrated so that
        `target` of the pair pass; sets `learn.pair_check` (the model is untouched), returns the check's own learner"""
        learn = binary_learner(dls or pair_check_dls(self.dls), check_net, loss_func=log_loss, opt_func=Adam, seed=seed)
        with learn.no_bar() if quiet else nullcontext(), learn.no_logging() if quiet else nullcontext():
            learn.fit_one_cycle(epochs, lr)
        self.pair_check = PairCheck.from_learner(learn, target)
        return learn

    def predict(self, item, rm_type_tfms=None, with_input:bool=False):
        """fastai's `predict` on one image prepared as `dls.test_dl` does; raises `NoDigitError` (no digit),
        `ManyDigitsError` (several side by side) or `NotInPairError` (the pair check finds another digit or shape)"""
        dl = self.dls.test_dl([item], rm_type_tfms=rm_type_tfms, num_workers=0)
        n = int(getattr(dl, 'digits', (1,))[0])
        if n == 0: raise NoDigitError("No digit found in the image: it looks blank, one colour, noise, or a mark too "
                                      "small to be a digit. Give a picture of one digit (see `prepare_digit` and "
                                      "`show_prepared`)")
        if n > 1: raise ManyDigitsError(f"The image holds {n} digits side by side, and the model tells one digit: give "
                                        "a picture of one digit (crop the others out; see `show_prepared`)")
        if not bool(getattr(dl, 'in_pair', (True,))[0]):
            raise _not_in_pair(self.dls.vocab, self.pair_check, float(dl.other_probs[0]))
        inp, preds, _, dec_preds = self.get_preds(dl=dl, with_input=True, with_decoded=True)
        dec = self.dls.decode_batch((inp, dec_preds))[0]  # as fastai's, for one input
        res = dec[1], dec_preds[0], preds[0]
        return (dec[0],) + res if with_input else res

    def export(self, fname:str|Path='export.pkl', **kwargs):
        """fastai's `export` to a '.pkl' (written to a temporary file, then renamed: never half-written), or the safe
        format to a '.safetensors' (`export_binary_learner`); any other name is refused, as the command line does"""
        if rank_distrib(): return  # as fastai: only the main process exports
        if check_model_suffix(fname, 'Export file') == SAFE_SUFFIX:
            if kwargs: raise TypeError(f"{', '.join(kwargs)} apply to fastai's pickle export, not to '.safetensors'")
            return export_binary_learner(self, fname)
        with atomic_path(Path(self.path).expanduser()/Path(fname).expanduser()) as tmp: super().export(tmp, **kwargs)

    def show_results(self, ds_idx:int=1, dl=None, max_n:int=9, shuffle:bool=True, **kwargs):
        "fastai's `show_results`: a batch of `dl` (default: the validation set's), targets and predictions; the figure"
        if dl is None: dl = self.dls[ds_idx].new(shuffle=shuffle)
        b = dl.one_batch()
        _, _, preds = self.get_preds(dl=[b], with_decoded=True)
        return dl.show_results(b, preds, max_n=max_n, **kwargs)

    distrib_ctx = distrib_ctx  # fastai's `distrib_ctx` (Accelerate and DDP), on CPU backends (gloo) too


def _not_in_pair(vocab, check:PairCheck, p:float) -> NotInPairError:
    "The `NotInPairError` for an image whose probability of being another digit is `p`, saying which part flagged it"
    a, b = vocab
    why = (f"it looks like another digit (the pair check's probability {p:.3f}, above its threshold "
           f"{check.threshold:.3f})" if p > check.threshold else
           f"its shape is unlike the {a}s and {b}s the check learned from")
    return NotInPairError(f"Neither {a} nor {b}: {why}. This model only knows {a} and {b}: it cannot say which digit "
                          "this is", probability=p)


def get_model(arch) -> nn.Module:
    "A fresh model from `arch`: a name in `ARCHS`, a function returning an `nn.Module`, or an `nn.Module`"
    if isinstance(arch, nn.Module): return arch
    if isinstance(arch, str):
        name = arch.removesuffix('_net').removesuffix('_model')
        if name in ARCHS: return ARCHS[name]()
        raise BinaryDigitsError(f"Unknown `arch` {arch!r}: use one of {', '.join(map(repr, ARCHS))}, a function "
                                "returning an nn.Module, or an nn.Module")
    if not callable(arch): raise TypeError(f"`arch` must be a name ({', '.join(ARCHS)}), a function returning an "
                                           f"nn.Module, or an nn.Module; got a {type(arch).__name__}")
    model = arch()
    if not isinstance(model, nn.Module):
        raise TypeError(f"`arch` {arch!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _check_output(model:nn.Module, x:torch.Tensor):
    "Fail early, and clearly, when the model does not map (bs, 784) to (bs, 1)"
    was_training = model.training
    try:
        with torch.no_grad(): out = model.eval()(x)
    except Exception as e:
        raise BinaryDigitsError(f"The model failed on a batch of shape {tuple(x.shape)} (flattened 28x28 digits): "
                                f"{e}") from e
    finally: model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (len(x), 1):
        raise BinaryDigitsError(f"The model must return one output per image, shape (bs, 1); on a batch of shape "
                                f"{tuple(x.shape)} it returned {shape}")


@delegates(Learner.__init__, but=['dls', 'model', 'loss_func', 'opt_func', 'lr', 'metrics'])
def binary_learner(dls,
    arch='linear',                # 'linear', 'simple', 'deep', 'cnn', a function returning an nn.Module, an nn.Module
    loss_func=mnist_loss,         # the book's loss; `log_loss` or fastai's `BCEWithLogitsLossFlat()` work too
    opt_func=SGD,                 # fastai's SGD, as the book
    lr:float=0.1,                 # default learning rate for `fit` and `fit_one_cycle`
    metrics=batch_accuracy,       # metric(s) shown in fastai's table
    seed:int|None=None,           # seed the initial weights and the loaders' shuffling: same seed, same table
    device=None,                  # where to train; None: where the data is
    fast:bool=True,               # the package's fast paths (False: fastai's own, for this learner only)
    **kwargs,
) -> BinaryLearner:
    "A `Learner` for `dls` (a `BinaryDigitsDataLoaders`) with the book's loss, metric and SGD"
    if seed is not None:
        set_seed(seed)
        for i, dl in enumerate(dls.loaders): dl.rng = random.Random(seed + i)
    model = get_model(arch)
    if device is not None: dls.to(device := check_device(device))
    else: device = getattr(dls, 'device', None) or check_device(None)
    _check_output(model.to(device), dls.train.dataset.x[:2].to(device))
    return BinaryLearner(dls, model, loss_func=loss_func, opt_func=opt_func, lr=lr, metrics=metrics, fast=fast,
                         **kwargs)


def load_binary_learner(fname:str|Path, cpu:bool=True) -> BinaryLearner:
    "The inference-ready learner in the safe model file `fname`: nothing in it is run, everything is checked first"
    facts, model = read_model_file(fname)
    device = torch.device('cpu') if cpu else default_device()
    vocab = CategoryMap(list(facts['pair']), sort=False)
    # loaders without images, as fastai's `export` leaves them: `test_dl`, `vocab` and decoding work
    empty = lambda: DigitsDataset(torch.empty(0, 28*28, device=device), torch.empty(0, 1, device=device), vocab)
    dls = BinaryDigitsDataLoaders(BinaryDigitsDL(empty(), shuffle=True, device=device, do_setup=False),
                                  BinaryDigitsDL(empty(), device=device, do_setup=False),
                                  path=Path(fname).expanduser().parent, device=device)
    dls.prepare = facts['prepare']
    if facts['pair_check'] is not None: dls.pair_check = facts['pair_check'].to(device)
    return BinaryLearner(dls, model.to(device).eval(), loss_func=facts['loss'], opt_func=SGD, metrics=batch_accuracy)


def load_model_file(fname:str|Path, cpu:bool=True) -> Learner:
    "The learner in `fname`: '.safetensors' read safely, '.pkl' by fastai's `load_learner` (it runs code: trust it)"
    existing_model_file(fname)
    return load_binary_learner(fname, cpu=cpu) if check_model_suffix(fname) == SAFE_SUFFIX else load_pickle(fname, cpu)

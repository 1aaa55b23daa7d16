"The book's losses and metric for one output per image: `mnist_loss`, `log_loss`, `batch_accuracy`"
import torch
from torch import Tensor

from .checks import BinaryDigitsError

__all__ = ['BinaryLoss', 'mnist_loss', 'log_loss', 'batch_accuracy']


def _plain(t:Tensor) -> Tensor:
    "`t` as a plain `Tensor`: fastai's typed tensors fail in `torch.where` outside `fit` ('Multiple dispatch failed')"
    return t.as_subclass(Tensor) if type(t) is not Tensor and isinstance(t, Tensor) else t


def _flat_pair(preds:Tensor, targets:Tensor, what:str) -> tuple:
    "`preds` and `targets` both flattened to (n,), or a clear error: (n, 1) against (n,) must never broadcast to (n, n)"
    preds, targets = _plain(preds), _plain(targets)
    if preds.ndim > 2 or (preds.ndim == 2 and preds.shape[1] != 1):
        raise BinaryDigitsError(f"`{what}` expects one output per image, predictions of shape (n, 1) or (n,), got "
                                f"{tuple(preds.shape)}; give the model a final layer with one output")
    if targets.ndim > 2 or targets.numel() != (preds.shape[0] if preds.ndim else 1):
        raise BinaryDigitsError(f"`{what}` got predictions of shape {tuple(preds.shape)} and targets of shape "
                                f"{tuple(targets.shape)}: they must hold one value per image each, as (n, 1) or (n,)")
    return preds.reshape(-1), targets.reshape(-1)


def _mnist_loss(preds:Tensor, targets:Tensor) -> Tensor:
    "The book's loss per image: how far the sigmoid of the output is from the target"
    preds = preds.sigmoid()
    return torch.where(targets == 1, 1-preds, preds)


def _log_loss(preds:Tensor, targets:Tensor, eps:float=1e-7) -> Tensor:
    "Log loss per image, on sigmoids clamped away from 0 and 1 so `log` stays finite"
    p = preds.sigmoid().clamp(eps, 1-eps)
    return -targets*p.log() - (1-targets)*(1-p).log()


class BinaryLoss:
    "A loss on raw outputs (n, 1) and 0/1 targets that gives fastai its activation (sigmoid) and decoding (p > 0.5)"
    def __init__(self, func, reduction:str='mean'):
        self.func, self.reduction = func, reduction  # fastai sets `reduction` to 'none' for per-item losses
        self.__name__ = func.__name__.lstrip('_')
    def __call__(self, preds:Tensor, targets:Tensor) -> Tensor:
        res = self.func(*_flat_pair(preds, targets, self.__name__))
        if self.reduction not in ('mean', 'sum', 'none'):
            raise BinaryDigitsError(f"`reduction` must be 'mean', 'sum' or 'none', got {self.reduction!r}")
        return res if self.reduction == 'none' else getattr(res, self.reduction)()
    def activation(self, x:Tensor) -> Tensor: return torch.sigmoid(_plain(x))
    def decodes(self, x:Tensor) -> Tensor: return (_plain(x) > 0.5).float()
    def __repr__(self): return f'{type(self).__name__}({self.__name__})'


mnist_loss = BinaryLoss(_mnist_loss)  # the book's: torch.where(targets==1, 1-preds.sigmoid(), preds.sigmoid()).mean()
log_loss = BinaryLoss(_log_loss)      # -y*log(p) - (1-y)*log(1-p) on p = sigmoid(preds), clamped


def batch_accuracy(preds:Tensor, targets:Tensor) -> Tensor:
    "Share of images whose sigmoid output is on the right side of 0.5"
    preds, targets = _flat_pair(preds, targets, 'batch_accuracy')
    return ((preds.sigmoid() > 0.5) == (targets > 0.5)).float().mean()

"The book's training loop from scratch: init, predict, loss, gradient, step, repeat; small enough to read in one go"
import torch
from torch import Tensor

from .losses import batch_accuracy, mnist_loss

__all__ = ['init_params', 'linear1', 'calc_grad', 'train_epoch', 'validate_epoch', 'BasicOptim', 'train_model']


def init_params(size, std:float=1.0, device=None) -> Tensor:
    "Step 1, init: random weights of shape `size`, scaled by `std`, that track their gradients"
    if not (isinstance(std, (int, float)) and std > 0):
        raise ValueError(f"`std` must be a positive number, such as 1.0, got {std!r}")
    return (torch.randn(size, device=device)*std).requires_grad_()


def linear1(xb:Tensor, weights:Tensor, bias:Tensor) -> Tensor:
    "Step 2, predict: one weight per pixel, plus a bias; `xb` (bs, 784) @ `weights` (784, 1) + `bias` (1,) -> (bs, 1)"
    return xb@weights + bias


def calc_grad(xb:Tensor, yb:Tensor, model, loss_func=mnist_loss) -> Tensor:
    "Steps 3 and 4, loss and gradient: add d(loss)/d(param) to each parameter's `.grad`; returns the loss"
    loss = loss_func(model(xb), yb)
    loss.backward()
    return loss


class BasicOptim:
    "Step 5, step: the book's optimizer, plain SGD; `step` moves each parameter against its gradient by `lr`"
    def __init__(self, params, lr:float):
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"`lr` must be a positive learning rate, such as 1.0, got {lr!r}")
        self.params, self.lr = list(params), lr
        if not self.params: raise ValueError("`params` is empty: give the tensors to train, such as (weights, bias)")

    def step(self, *args, **kwargs):
        for p in self.params:
            if p.grad is not None: p.data -= p.grad.data*self.lr

    def zero_grad(self, *args, **kwargs):
        for p in self.params: p.grad = None

    def __repr__(self): return f'{type(self).__name__}({len(self.params)} tensors, lr={self.lr})'


def train_epoch(model, dl, opt, loss_func=mnist_loss) -> float:
    "One pass over `dl`: gradient, step and zero the gradients for each batch; returns the epoch's mean loss"
    total, n = 0., 0
    for xb, yb in dl:
        loss = calc_grad(xb, yb, model, loss_func)
        opt.step()
        opt.zero_grad()
        total, n = total + loss.item()*len(xb), n + len(xb)
    if n == 0: raise ValueError("`dl` gave no batches: is it empty, or smaller than its batch size with `drop_last`?")
    return total/n


def validate_epoch(model, dl) -> float:
    "Accuracy of `model` on `dl`, rounded to 4 places as the book prints it"
    # The book averages the batches' accuracies, which gives a short last batch too much say; each batch here
    # counts by its size, so this is the accuracy over all images, the figure fastai's metric reports.
    correct, n = 0., 0
    with torch.no_grad():
        for xb, yb in dl: correct, n = correct + batch_accuracy(model(xb), yb).item()*len(xb), n + len(xb)
    if n == 0: raise ValueError("`dl` gave no batches, so there is no accuracy to measure")
    return round(correct/n, 4)


def train_model(model, dls, opt, epochs:int, loss_func=mnist_loss, show:bool=True) -> list:
    "Repeat: `epochs` passes over `dls.train`, each scored on `dls.valid`; returns `(train loss, accuracy)` per epoch"
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"`epochs` must be a whole number of at least 1, got {epochs!r}")
    history = []
    for _ in range(epochs):
        loss = train_epoch(model, dls.train, opt, loss_func)
        history.append((loss, validate_epoch(model, dls.valid)))
        if show: print(history[-1][1], end=' ')  # as the book: one accuracy per epoch, on one line
    if show: print()
    return history

"The from-scratch loop, step by step, and the chapter's point: scratch, PyTorch and fastai train the same model alike"
import random

import pytest
import torch
from torch import nn
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.optimizer import SGD

from fastai_binary_digits import BinaryDigitsDataLoaders, batch_accuracy, binary_learner, mnist_loss
from fastai_binary_digits.scratch import *


@pytest.fixture(scope='module')
def dls():
    "3 vs 7 from the bundled sample, as in the book"
    return BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True, seed=0)


def fresh_params(dls, seed=0):
    "The book's weights (784, 1) and bias (1,), the same for a given `seed`"
    torch.manual_seed(seed)
    return init_params((28*28, 1), device=dls.device), init_params(1, device=dls.device)


def as_model(weights, bias):
    return lambda xb: linear1(xb, weights, bias)


# ---------------------------------------------------------------------------------------------------------------
# The five steps, one at a time

def test_init_params():
    torch.manual_seed(0)
    w = init_params((28*28, 1))
    assert w.shape == (784, 1) and w.requires_grad and w.is_leaf
    assert 0.9 < w.std().item() < 1.1
    torch.manual_seed(0)
    assert torch.allclose(init_params((28*28, 1), std=0.01), w*0.01)  # same draw, scaled
    assert init_params(1).shape == (1,)
    for std in (0, -1.0, 'big'):
        with pytest.raises(ValueError, match=r'`std` must be a positive number.*got'): init_params(3, std=std)


def test_linear1_is_a_linear_layer(dls):
    xb, _ = dls.one_batch()
    w, b = fresh_params(dls)
    preds = linear1(xb, w, b)
    assert preds.shape == (len(xb), 1)
    lin = nn.Linear(784, 1).to(dls.device)
    with torch.no_grad(): lin.weight.copy_(w.T); lin.bias.copy_(b)
    assert torch.allclose(preds, lin(xb), atol=1e-5)
    assert torch.allclose(preds[0], (xb[0]*w.view(-1)).sum() + b, atol=1e-5)  # the book's first prediction


def test_calc_grad_gives_the_gradient_and_accumulates(dls):
    xb, yb = dls.one_batch()
    w, b = fresh_params(dls)
    loss = calc_grad(xb, yb, as_model(w, b))
    # the reference: PyTorch's autograd on the book's loss, written out
    w2, b2 = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    p = (xb@w2 + b2).sigmoid()
    ref = torch.where(yb == 1, 1-p, p).mean()
    gw, gb = torch.autograd.grad(ref, (w2, b2))
    assert torch.allclose(loss, ref) and torch.allclose(w.grad, gw) and torch.allclose(b.grad, gb)
    calc_grad(xb, yb, as_model(w, b))  # the book's warning: gradients add up until they are zeroed
    assert torch.allclose(w.grad, 2*gw) and torch.allclose(b.grad, 2*gb)


def test_basic_optim_step_and_zero_grad():
    w, b = torch.tensor([1., 2.], requires_grad=True), torch.tensor([3.], requires_grad=True)
    (w*torch.tensor([10., 20.])).sum().backward()  # grads: [10, 20] for w, none for b
    opt = BasicOptim([w, b], lr=0.1)
    opt.step()
    assert torch.allclose(w, torch.tensor([0., 0.])) and b.item() == 3.  # b had no gradient: left alone
    opt.zero_grad()
    assert w.grad is None and b.grad is None
    assert 'lr=0.1' in repr(opt)


@pytest.mark.parametrize('lr', [0, -1.0, None, '1'])
def test_basic_optim_bad_lr(lr):
    with pytest.raises(ValueError, match=r'`lr` must be a positive learning rate.*got'):
        BasicOptim([torch.zeros(1, requires_grad=True)], lr)


def test_basic_optim_no_params():
    with pytest.raises(ValueError, match=r'`params` is empty'): BasicOptim([], 1.0)


def test_train_epoch_lowers_the_loss(dls):
    w, b = fresh_params(dls)
    model, opt = as_model(w, b), BasicOptim((w, b), lr=1.0)
    xb, yb = next(iter(dls.valid))
    before = mnist_loss(model(xb), yb).item()
    losses = [train_epoch(model, dls.train, opt) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert mnist_loss(model(xb), yb).item() < before
    assert w.grad is None and b.grad is None  # zeroed after every step


def test_train_epoch_mean_loss_is_over_images(dls):
    "The loss `train_epoch` returns is the mean over the epoch's images, each batch weighted by its size"
    w, b = fresh_params(dls)
    seen = []
    class Spy:
        def step(self): pass
        def zero_grad(self): w.grad = b.grad = None
    class Dl:
        def __iter__(self):
            for xb, yb in dls.valid: seen.append((len(xb), mnist_loss(linear1(xb, w, b), yb).item())); yield xb, yb
    loss = train_epoch(as_model(w, b), Dl(), Spy())  # no step: the loss of the fixed weights
    assert loss == pytest.approx(sum(n*l for n, l in seen)/sum(n for n, _ in seen), rel=1e-6)


def test_validate_epoch(dls):
    y = dls.valid.dataset.y
    always_first = lambda xb: torch.full((len(xb), 1), -10., device=xb.device)  # always predicts pair[0] (label 0)
    assert validate_epoch(always_first, dls.valid) == round((y == 0).float().mean().item(), 4)
    w, b = fresh_params(dls)
    acc = validate_epoch(as_model(w, b), dls.valid)
    exact = batch_accuracy(linear1(dls.valid.dataset.x, w, b), y).item()  # all images at once
    assert acc == round(exact, 4) and w.grad is None


def test_empty_loader_is_a_clear_error(dls):
    w, b = fresh_params(dls)
    empty = dls.train.new(bs=len(dls.train.dataset) + 1, drop_last=True)
    with pytest.raises(ValueError, match=r'`dl` gave no batches'):
        train_epoch(as_model(w, b), empty, BasicOptim((w, b), 1.))
    with pytest.raises(ValueError, match=r'`dl` gave no batches'): validate_epoch(as_model(w, b), empty)


def test_train_model_as_the_book(dls, capsys):
    "The book's 20 epochs at lr 1.0: the accuracy climbs, one figure per epoch printed on one line"
    w, b = fresh_params(dls)
    hist = train_model(as_model(w, b), dls, BasicOptim((w, b), lr=1.0), 20)
    accs = [a for _, a in hist]
    assert len(hist) == 20 and all(a == round(a, 4) for a in accs)
    assert capsys.readouterr().out == ' '.join(map(str, accs)) + ' \n'
    assert accs[-1] > accs[0] and accs[-1] > 0.9
    assert hist[-1][0] < hist[0][0]


@pytest.mark.parametrize('epochs', [0, -2, 1.5, True, None])
def test_train_model_bad_epochs(dls, epochs):
    w, b = fresh_params(dls)
    with pytest.raises(ValueError, match=r'`epochs` must be a whole number of at least 1, got'):
        train_model(as_model(w, b), dls, BasicOptim((w, b), 1.0), epochs)


def test_module_exports_and_is_not_star_exported():
    import fastai_binary_digits, fastai_binary_digits.scratch as scratch
    assert set(scratch.__all__) == {'init_params', 'linear1', 'calc_grad', 'train_epoch', 'validate_epoch',
                                    'BasicOptim', 'train_model'}
    assert not set(scratch.__all__) & set(fastai_binary_digits.__all__)


# ---------------------------------------------------------------------------------------------------------------
# The chapter's point: three ways to write it, one result

EPOCHS, LR, SHUFFLE_SEED = 10, 1.0, 1234


class Recorded:
    "Iterate over `dl`, noting a fingerprint of each training batch in `log`"
    def __init__(self, dl, log): self.dl, self.log = dl, log
    def __iter__(self):
        for xb, yb in self.dl:
            self.log.append(fingerprint(xb, yb))
            yield xb, yb


def fingerprint(xb, yb): return (len(xb), round(xb.sum().item(), 3), round((xb[:, 300]*yb[:, 0]).sum().item(), 3))


def linear_like(weights, bias, device):
    "An `nn.Linear(784, 1)` holding `weights` (784, 1) and `bias` (1,)"
    lin = nn.Linear(28*28, 1).to(device)
    with torch.no_grad(): lin.weight.copy_(weights.T); lin.bias.copy_(bias)
    return lin


def test_scratch_pytorch_and_fastai_agree(dls):
    "Same initial weights, same batches in the same order: the same final weights and validation accuracy, four ways"
    w0, b0 = fresh_params(dls, seed=0)
    w0, b0 = w0.detach(), b0.detach()
    logs = {}

    # (1) from scratch: `linear1` on explicit tensors, `BasicOptim`
    dls.train.rng = random.Random(SHUFFLE_SEED)  # the training loader's shuffling starts from the same state each time
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    logs['scratch'] = []
    opt = BasicOptim((w, b), LR)
    for _ in range(EPOCHS): train_epoch(as_model(w, b), Recorded(dls.train, logs['scratch']), opt)
    acc_scratch = validate_epoch(as_model(w, b), dls.valid)

    # (2) PyTorch: `nn.Linear` and `torch.optim.SGD`, in PyTorch's own loop
    dls.train.rng = random.Random(SHUFFLE_SEED)
    lin = linear_like(w0, b0, dls.device)
    logs['pytorch'] = []
    opt = torch.optim.SGD(lin.parameters(), lr=LR)
    for _ in range(EPOCHS):
        for xb, yb in Recorded(dls.train, logs['pytorch']):
            mnist_loss(lin(xb), yb).backward()
            opt.step()
            opt.zero_grad()
    acc_pytorch = validate_epoch(lin, dls.valid)

    # (3) fastai: `binary_learner` with fastai's SGD, `fit`
    dls.train.rng = random.Random(SHUFFLE_SEED)
    logs['fastai'] = []
    class RecordBatches(Callback):
        def before_batch(self):
            if self.training: logs['fastai'].append(fingerprint(self.xb[0], self.yb[0]))
    learn = binary_learner(dls, arch=linear_like(w0, b0, dls.device), cbs=RecordBatches())
    with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, LR)
    acc_fastai = learn.recorder.values[-1][-1]  # fastai's `batch_accuracy` metric after the last epoch

    # (4) and fastai's plain `Learner`, as the book writes it
    dls.train.rng = random.Random(SHUFFLE_SEED)
    logs['book'] = []
    class RecordBook(Callback):
        def before_batch(self):
            if self.training: logs['book'].append(fingerprint(self.xb[0], self.yb[0]))
    book = Learner(dls, linear_like(w0, b0, dls.device), opt_func=SGD, loss_func=mnist_loss, metrics=batch_accuracy,
                   cbs=RecordBook())
    with book.no_bar(), book.no_logging(): book.fit(EPOCHS, LR)
    acc_book = book.recorder.values[-1][-1]

    # the same batches, in the same order, and shuffled (not in the loader's order)
    n_batches = len(dls.train)
    assert len(logs['scratch']) == EPOCHS*n_batches
    assert logs['scratch'] == logs['pytorch'] == logs['fastai'] == logs['book']
    assert logs['scratch'][:n_batches] != logs['scratch'][n_batches:2*n_batches]  # a new order each epoch
    assert logs['scratch'][:n_batches] != [fingerprint(xb, yb) for xb, yb in dls.train.new(shuffle=False)]

    others = {'PyTorch': lin, 'binary_learner': learn.model, 'Learner': book.model}
    for other in others.values():
        assert torch.allclose(w.detach().T, other.weight, atol=1e-5), (w.detach().T - other.weight).abs().max()
        assert torch.allclose(b.detach(), other.bias, atol=1e-5)
    assert (w.detach() - w0).abs().max() > 0.1  # they did train
    assert acc_scratch == acc_pytorch == round(acc_fastai, 4) == round(acc_book, 4)
    assert acc_scratch > 0.85
    diffs = ', '.join(f'{k} {(w.detach().T - m.weight).abs().max().item():.3g}' for k, m in others.items())
    print(f"\nmax |weight difference| from scratch: {diffs}; validation accuracy: scratch {acc_scratch}, "
          f"PyTorch {acc_pytorch}, binary_learner {acc_fastai:.6f}, Learner {acc_book:.6f}")

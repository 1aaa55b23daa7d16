"The fast paths change nothing fastai users see: events, flags, cancel exceptions, optimizer steps, batches, results"
import copy, random

import pytest
import torch
from torch import Tensor, nn

from fastai.callback.core import (Callback, CancelBackwardException, CancelBatchException, CancelEpochException,
                                  CancelFitException, CancelStepException, CancelTrainException, CancelValidException,
                                  _events)
from fastai.data.core import Transform
from fastai.learner import Learner
from fastai.optimizer import SGD
from fastai_binary_digits import BinaryDigitsDataLoaders, batch_accuracy, deep_net, mnist_loss
from fastai_binary_digits.data import images_to_x
from fastai_binary_digits.learner import BinaryLearner
from fastai_binary_digits.mnist import load_digits

pytestmark = pytest.mark.usefixtures('fast_paths_on')  # conftest.py: fastai's code here is the code they mirror


@pytest.fixture
def dls():
    "4 vs 8 from the bundled sample, batch 256 (7 training and 2 validation batches)"
    return BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0)


def _pair(dls, cbs_fn, cls_model=lambda: nn.Linear(784, 1), **kwargs):
    "The same training under fastai's `Learner` and under `BinaryLearner`: same data, weights, shuffling, callbacks"
    torch.manual_seed(0)
    model = cls_model()
    res = []
    for cls in (Learner, BinaryLearner):
        learn = cls(dls, copy.deepcopy(model), loss_func=mnist_loss, opt_func=SGD, lr=0.1, metrics=batch_accuracy,
                    cbs=cbs_fn(), **kwargs)
        res.append(learn)
    return res


def _reseed(dls):
    "The same shuffling for the next fit"
    for i, dl in enumerate(dls.loaders): dl.rng = random.Random(i)


def _logger(log:list, name:str='log', order:int=0, **flags):
    "A callback that notes every event it gets, with the training flag and iteration, in `log`"
    def note(self, e):  # `learn` is None for a callback removed during this event: fastai still calls it this once
        log.append((name, e, getattr(self.learn, 'training', None), getattr(self.learn, 'iter', None)))
    cls = type(f'Log{name.title()}', (Callback,), {e: (lambda self, e=e: note(self, e)) for e in _events})
    cb = cls()
    cb.order = order
    for k, v in flags.items(): setattr(cb, k, v)
    return cb


def _fit_logs(dls, make_cbs, n_epoch:int=2):
    "The event logs of both learners over `fit(n_epoch)`"
    logs = ([], [])
    for log, learn in zip(logs, _pair(dls, lambda: [])):
        learn.add_cbs(make_cbs(log))
        learn.fit(n_epoch)
    return logs


# ---------------------------------------------------------------------------------------------------------------
# Callbacks: events, order, flags, cancel exceptions, changes during fit

def test_events_reach_callbacks_in_fastais_order(dls):
    fastai_log, ours = _fit_logs(dls, lambda log: [_logger(log, 'late', order=70), _logger(log, 'early', order=-20),
                                                   _logger(log, 'mid', order=0)])
    assert ours == fastai_log
    assert {e for _, e, *_ in ours} >= {'before_fit', 'before_batch', 'after_pred', 'after_loss', 'before_backward',
                                        'after_backward', 'before_step', 'after_step', 'after_batch', 'after_fit'}


def test_run_flags_as_fastai(dls):
    def cbs(log):
        off = _logger(log, 'off', run=False)
        return [_logger(log, 'train_only', run_valid=False), _logger(log, 'valid_only', run_train=False), off]
    fastai_log, ours = _fit_logs(dls, cbs)
    assert ours == fastai_log
    assert not any(n == 'off' for n, *_ in ours)
    assert not any(n == 'train_only' and e == 'after_pred' and not training for n, e, training, _ in ours)


def test_run_is_reset_after_fit_as_fastai(dls):
    for learn in _pair(dls, lambda: []):
        log = []
        cb = _logger(log, 'off', run=False)
        learn.add_cb(cb)
        learn.fit(1)
        assert not log and cb.run  # fastai sets `run` back to True at `after_fit`


class _Canceller(Callback):
    "Raises fastai's cancel exceptions at set places"
    order = 1
    def before_step(self):
        if self.iter == 1: raise CancelStepException
    def before_backward(self):
        if self.iter == 2: raise CancelBackwardException
    def after_pred(self):
        if self.iter == 3: raise CancelBatchException
        if not self.training and self.epoch == 1: raise CancelValidException
    def after_loss(self):
        if self.training and self.iter == 4 and self.epoch == 1: raise CancelTrainException
    def before_epoch(self):
        if self.epoch == 2: raise CancelEpochException
        if self.epoch == 3: raise CancelFitException


def test_cancel_exceptions_as_fastai(dls):
    fastai_log, ours = _fit_logs(dls, lambda log: [_Canceller(), _logger(log)], n_epoch=5)
    assert ours == fastai_log
    events = {e for _, e, *_ in ours}
    assert {'after_cancel_step', 'after_cancel_backward', 'after_cancel_batch', 'after_cancel_validate',
            'after_cancel_train', 'after_cancel_epoch', 'after_cancel_fit'} <= events


def test_callbacks_added_removed_and_reordered_during_fit(dls):
    class Changer(Callback):
        def __init__(self, log): self.log_, self.added = log, None
        def after_epoch(self):
            if self.epoch == 0: self.added = _logger(self.log_, 'added', order=-5); self.learn.add_cb(self.added)
            if self.epoch == 1: self.learn.cbs[-1].order = 90  # the added logger now comes after every other
            if self.epoch == 2: self.learn.remove_cb(self.added)
    fastai_log, ours = _fit_logs(dls, lambda log: [Changer(log), _logger(log, 'fixed', order=10)], n_epoch=4)
    assert ours == fastai_log
    assert any(n == 'added' for n, *_ in ours)


def test_unknown_event_raises_as_fastai(dls):
    for learn in _pair(dls, lambda: []):
        with pytest.raises(Exception, match='missing not_an_event'): learn('not_an_event')
        learn(['before_fit', 'after_fit'])  # a list of events, as fastai takes


# ---------------------------------------------------------------------------------------------------------------
# Results

@pytest.mark.parametrize('model', [lambda: nn.Linear(784, 1), deep_net])
def test_fit_gives_fastais_weights_and_records(dls, model):
    ref, ours = _pair(dls, lambda: [], cls_model=model)
    for learn in (ref, ours):
        _reseed(dls)
        learn.fit(2, 0.1, wd=0.01)
    for a, b in zip(ref.model.parameters(), ours.model.parameters()): assert torch.equal(a, b)
    assert ours.recorder.values == ref.recorder.values
    assert ours.recorder.losses == ref.recorder.losses and ours.recorder.lrs == ref.recorder.lrs


# ---------------------------------------------------------------------------------------------------------------
# Loaders and conversion

def test_batches_are_fastais(dls):
    "Our `__iter__` serves what fastai's `DataLoader.__iter__` serves, with the same per-epoch shuffling"
    from fastai.data.load import DataLoader
    dl = dls.train
    dl.rng = random.Random(1)
    ours = [tuple(t.clone() for t in b) for b in dl]
    dl.rng = random.Random(1)
    theirs = list(DataLoader.__iter__(dl))
    assert len(ours) == len(theirs) == len(dl)
    for a, b in zip(ours, theirs): assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert isinstance(dl.get_idxs(), list) and sorted(dl.get_idxs()) == list(range(dl.n))


def test_batch_transforms_still_apply(dls):
    class Double(Transform):
        def encodes(self, x:Tensor): return x*2
    dl = dls.valid.new(after_batch=[Double()])
    x, y = dl.one_batch()
    assert torch.equal(x, dls.valid.dataset.x[:256]*2)


def test_images_to_x_is_the_book_conversion():
    images, _ = load_digits([4], 'training', sample=True)[4]
    x = images_to_x(images)
    assert x.dtype == torch.float32 and x.shape == (len(images), 784)
    assert torch.equal(x, images.view(len(images), -1).float()/255)
    x[0, 0] = 0.5  # an ordinary, writable tensor
    assert torch.equal(images_to_x(images[:0]), torch.empty(0, 784))

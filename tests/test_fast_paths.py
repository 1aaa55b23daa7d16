"The fast paths change nothing fastai users see: events, flags, cancel exceptions, optimizer steps, batches, results"
import copy, random
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from fastai.callback.core import (Callback, CancelBackwardException, CancelBatchException, CancelEpochException,
                                  CancelFitException, CancelStepException, CancelTrainException, CancelValidException,
                                  _events)
from fastai.data.core import Transform
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam, Optimizer
from fastai.torch_core import to_detach
from fastai_binary_digits import BinaryDigitsDataLoaders, batch_accuracy, binary_learner, deep_net, mnist_loss
from fastai_binary_digits.data import _images_to_x
from fastai_binary_digits.learner import BinaryLearner
from fastai_binary_digits.mnist import load_digits
from fastai_binary_digits.optimizer import SGDOptimizer

pytestmark = pytest.mark.usefixtures('fast_paths_on')  # conftest.py: checked on whatever fastai and torch are here


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
# Results and the optimizer

@pytest.mark.parametrize('model', [lambda: nn.Linear(784, 1), deep_net])
def test_fit_gives_fastais_weights_and_records(dls, model):
    ref, ours = _pair(dls, lambda: [], cls_model=model)
    for learn in (ref, ours):
        _reseed(dls)
        learn.fit(2, 0.1, wd=0.01)
    assert type(ours.opt) is SGDOptimizer and type(ref.opt) is Optimizer
    for a, b in zip(ref.model.parameters(), ours.model.parameters()): assert torch.equal(a, b)
    assert ours.recorder.values == ref.recorder.values
    assert ours.recorder.losses == ref.recorder.losses and ours.recorder.lrs == ref.recorder.lrs


def _two_groups(m): return [list(m[0].parameters()), list(m[1:].parameters())]


@pytest.mark.parametrize('kw', [dict(), dict(wd=0.1), dict(wd=0.1, decouple_wd=False), dict(mom=0.9),
                                dict(mom=0.9, wd=0.1), dict(mom=0.9, wd=0.1, decouple_wd=False)])
def test_optimizer_matches_fastais_sgd_step_for_step(kw):
    torch.manual_seed(0)
    m1 = deep_net(); m2 = copy.deepcopy(m1)
    o1 = SGD(_two_groups(m1), lr=0.1, **kw)
    o2 = SGD(_two_groups(m2), lr=0.1, **kw); o2.__class__ = SGDOptimizer
    for o in (o1, o2):
        o.set_hyper('lr', [0.01, 0.1])  # a learning rate per group
        for p in o.param_lists[1][1::2]: o.state[p]['do_wd'] = False  # as `Learner` does for biases
    for step in range(6):
        if step == 3:
            for o in (o1, o2): o.freeze_to(1); o.set_hypers(mom=0.5) if 'mom' in kw else None
        x = torch.randn(32, 784)
        for o, m in ((o1, m1), (o2, m2)):
            m(x).pow(2).mean().backward(); o.step(); o.zero_grad()
        for a, b in zip(m1.parameters(), m2.parameters()): assert torch.equal(a, b), f'step {step}'
    sd1, sd2 = o1.state_dict(), o2.state_dict()
    assert sd1['hypers'] == sd2['hypers'] and len(sd1['state']) == len(sd2['state'])
    for s1, s2 in zip(sd1['state'], sd2['state']):
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) if isinstance(s1[k], Tensor) else s1[k] == s2[k]
                                              for k in s1)


def test_optimizer_falls_back_to_fastai_for_other_callbacks_and_state(dls):
    learn = binary_learner(dls, opt_func=Adam)
    learn.create_opt()
    assert type(learn.opt) is Optimizer  # not SGD's callbacks: fastai's optimizer as it is
    learn = binary_learner(dls, opt_func=partial(SGD, mom=0.9))
    learn.create_opt()
    assert type(learn.opt) is SGDOptimizer and learn.opt.hypers[0]['mom'] == 0.9
    # state the batched step does not know: fastai's per-parameter path, with fastai's results
    torch.manual_seed(0)
    m1 = nn.Linear(784, 1); m2 = copy.deepcopy(m1)
    o1, o2 = SGD(list(m1.parameters()), lr=0.1), SGD(list(m2.parameters()), lr=0.1)
    o2.__class__ = SGDOptimizer
    for o in (o1, o2): o.state[o.param_lists[0][0]]['lr'] = 5.  # ignored by fastai: hypers win over state
    for o, m in ((o1, m1), (o2, m2)):
        m(torch.ones(2, 784)).sum().backward(); o.step()
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_export_and_load_learner_keep_the_fast_optimizer(dls, tmp_path):
    from fastai.learner import load_learner
    learn = binary_learner(dls, seed=0, path=tmp_path)
    learn.fit(1)
    learn.export('m.pkl')
    assert type(learn.opt) is SGDOptimizer  # recreated by `export`, with its state
    back = load_learner(tmp_path/'m.pkl')
    back.dls = dls
    back.fit(1)
    assert type(back.opt) is SGDOptimizer and back.recorder.values[-1][-1] > 0.9


# ---------------------------------------------------------------------------------------------------------------
# Loaders, devices, detaching, conversion

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


def test_to_detach_matches_fastai(dls):
    learn = binary_learner(dls)
    learn.dl = dls.valid
    t = torch.ones(3, requires_grad=True)*2
    for cpu in (True, False):
        a, b = learn.to_detach(t, cpu=cpu), to_detach(t, cpu=cpu)
        assert type(a) is type(b) and torch.equal(a, b) and not a.requires_grad
    assert learn.to_detach([t, (t,)])[1][0].requires_grad is False  # other shapes: fastai's own path


def test_images_to_x_is_the_book_conversion():
    images, _ = load_digits([4], 'training', sample=True)[4]
    x = _images_to_x(images)
    assert x.dtype == torch.float32 and x.shape == (len(images), 784)
    assert torch.equal(x, images.view(len(images), -1).float()/255)
    x[0, 0] = 0.5  # an ordinary, writable tensor
    assert torch.equal(_images_to_x(images[:0]), torch.empty(0, 784))

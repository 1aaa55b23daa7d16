"""Differential tests: fastai's `Learner` and `BinaryLearner` (and a stock `TfmdDL` and `BinaryDigitsDL`) run the same
generated callbacks (and loader hooks) on the same data, model and seed, and must give the same event traces, recorder
values, weights and batches, bitwise. Also the version guard, `fast=False`, `VerboseCallback` and dataclass callbacks."""
import random, warnings
from dataclasses import dataclass
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from fastai.callback.core import (Callback, CancelBackwardException, CancelBatchException, CancelEpochException,
                                  CancelFitException, CancelStepException, CancelTrainException, CancelValidException,
                                  _events)
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.training import GradientAccumulation
from fastai.data.core import TfmdDL, Transform
from fastai.data.load import DataLoader, fa_collate
from fastai.learner import Learner
from fastai.optimizer import SGD

from fastai_binary_digits import BinaryDigitsDataLoaders, DigitsDataset, batch_accuracy, binary_learner, mnist_loss
from fastai_binary_digits import fastai_internals
from fastai_binary_digits.data import BinaryDigitsDL
from fastai_binary_digits.learner import BinaryLearner

pytestmark = pytest.mark.usefixtures('fast_paths_on')  # conftest.py: fastai's code here is the code they mirror
EVENTS = list(_events)
CANCELS = [CancelBatchException, CancelBackwardException, CancelEpochException, CancelFitException, CancelStepException,
           CancelTrainException, CancelValidException]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "One torch thread: the machine is shared, and these runs are small"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def dls():
    "4 vs 8 from the bundled sample, batch 256: 7 training and 2 validation batches"
    return BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0)


def _reseed(dls, seed=0):
    for i, dl in enumerate(dls.loaders): dl.rng = random.Random(seed + i)


# ---------------------------------------------------------------------------------------------------------------
# Generated callbacks: every kind the dispatch must treat as fastai does

class Log(list):
    "The events every generated callback notes, with the learner's state at the time"
    learn = None
    def note(self, who, e):
        l = self.learn
        if l is None: self.append((who, e))  # during the learner's `__init__` (`after_create`)
        else: self.append((who, e, l.training, l.__dict__.get('iter'), l.__dict__.get('epoch')))


def _handler(log, who, e):
    "A handler of event `e`, for a method (`self` given) or an instance attribute (no `self`)"
    def f(*_): log.note(who, e)
    return f


def _events_of(rng, k=None):
    return rng.sample(EVENTS, rng.randint(1, 8) if k is None else k)


def _plain(rng, log, i):
    "A `Callback` subclass with some event methods"
    evs = _events_of(rng)
    return type(f'Plain{i}', (Callback,), {e: _handler(log, f'plain{i}', e) for e in evs})()


def _own_call(rng, log, i):
    "A callback with its own `__call__` (as fastai's `VerboseCallback`): it sees every event"
    def __call__(self, e):
        log.note(f'own{i}', 'call:' + e)
        return Callback.__call__(self, e)
    return type(f'OwnCall{i}', (Callback,), {'__call__': __call__, **{e: _handler(log, f'own{i}', e) for e in _events_of(rng)}})()


class _Helper:
    def __init__(self, log, who, evs):
        for e in evs: setattr(self, e, _handler(log, who, e))


def _delegating(rng, log, i):
    "A callback whose events come through `GetAttr` delegation to another object (all of them, or those in `_xtra`)"
    evs, on_instance = _events_of(rng), rng.random() < 0.3
    attrs = {} if on_instance else {'_default': 'helper'}
    if rng.random() < 0.5: attrs['_xtra'] = rng.sample(evs, max(1, len(evs)//2))
    cb = type(f'Delegating{i}', (Callback,), attrs)()
    if on_instance: cb._default = 'helper'
    cb.helper = _Helper(log, f'deleg{i}', evs)
    return cb


def _instance_attrs(rng, log, i):
    "Plain `Callback()`s given their events as instance attributes: set after, or through fastai's `Callback(event=f)`"
    evs = _events_of(rng)
    if rng.random() < 0.5:
        cb = type(f'Attrs{i}', (Callback,), {})()
        for e in evs: setattr(cb, e, _handler(log, f'attrs{i}', e))
        return cb
    return type(f'Kw{i}', (Callback,), {})(**{e: _handler(log, f'kw{i}', e) for e in evs})


def _flags(rng, log, i):
    "Run flags: off from the start, training or validation only, or switched off by the callback itself"
    evs = _events_of(rng)
    attrs = {e: _handler(log, f'flags{i}', e) for e in evs}
    kind = rng.choice(['run', 'run_train', 'run_valid', 'self_off'])
    if kind == 'self_off':
        at = rng.choice(EVENTS)
        def switch(self, *_, at=at):
            log.note(f'flags{i}', 'off:' + at)
            self.run = False
        attrs[at] = switch
    cb = type(f'Flags{i}', (Callback,), attrs)()
    if kind != 'self_off': setattr(cb, kind, False)
    return cb


def _unhashable(rng, log, i):
    "A callback that cannot be hashed, equal to any other of its key (so fastai's `remove_cb` may remove that one)"
    attrs = {e: _handler(log, f'uneq{i}', e) for e in _events_of(rng)}
    attrs.update(__eq__=lambda self, o: getattr(o, 'key', None) == self.key, __hash__=None)
    cb = type(f'Unhashable{i}', (Callback,), attrs)()
    cb.key = rng.randint(0, 1)
    return cb


def _dataclass(rng, log, i):
    "A `@dataclass(eq=True)` callback: unhashable, equal by fields"
    cls = dataclass(eq=True)(type(f'Data{i}', (Callback,), {'__annotations__': {'tag': str}, 'tag': 'same',
                                                          **{e: _handler(log, f'dc{i}', e) for e in _events_of(rng)}}))
    return cls()


class _Duck:
    "Not a fastai `Callback` at all: anything with `__call__(event)`, `name` and `learn` goes in `learn.cbs`"
    learn = None
    def __init__(self, log, who): self.log, self.name = log, who
    def __call__(self, e): self.log.note(self.name, 'duck:' + e)


def _duck(rng, log, i): return _Duck(log, f'duck{i}')


def _canceller(rng, log, i, exc=None, at=None, nth=(1, 4)):
    "Raises a cancel exception at the `nth` times of an event"
    exc, at = exc or rng.choice(CANCELS), at or rng.choice(EVENTS)
    seen = [0]
    def raise_(self, *_):
        seen[0] += 1
        log.note(f'cancel{i}', at)
        if seen[0] in nth: raise exc()
    return type(f'Canceller{i}', (Callback,), {at: raise_})()


def _changer(rng, log, i):
    "Adds a callback, removes one (maybe itself), changes an order or gives another callback an event, during fit"
    at, when, what = rng.choice(EVENTS), rng.randint(1, 3), rng.choice(['add', 'remove', 'remove_self', 'order', 'attr'])
    seen = [0]
    sub = random.Random(rng.random())
    def change(self, *_):
        seen[0] += 1
        log.note(f'change{i}', at)
        if seen[0] != when: return
        learn, others = log.learn, [cb for cb in log.learn.cbs if cb is not self]
        if what == 'add': learn.add_cb(_plain(sub, log, f'{i}added'))
        elif what == 'remove' and others: learn.remove_cb(sub.choice(others))
        elif what == 'remove_self': learn.remove_cb(self)
        elif what == 'order' and others: sub.choice(others).order = sub.choice([-30, 5, 95.5])
        elif what == 'attr' and others:
            e = sub.choice(EVENTS)
            try: setattr(sub.choice(others), e, _handler(log, f'given{i}', e))
            except AttributeError: pass  # a callback without that attribute to set (a property): the same on both
    return type(f'Changer{i}', (Callback,), {at: change})()


KINDS = [_plain, _own_call, _delegating, _instance_attrs, _flags, _unhashable, _dataclass, _duck, _canceller, _changer]


def _model(rng, log):
    "A linear model; sometimes a subclass that defines event names (reached through the learner's delegation)"
    if rng.random() < 0.7: return nn.Linear(784, 1)
    evs = _events_of(rng, 2)
    cls = type('ModelWithEvents', (nn.Linear,), {e: _handler(log, 'model', e) for e in evs})
    return cls(784, 1)


def _run(learner_cls, dls, make, tmp_path, fit=lambda learn: learn.fit(2), model_fn=None, seed=0, **kwargs):
    "Build the callbacks with `make(rng, log)` and fit; return what the run did: events, results, weights, exception"
    rng, log = random.Random(seed), Log()
    model = model_fn(rng, log) if model_fn else nn.Linear(784, 1)
    torch.manual_seed(0)
    for p in model.parameters(): nn.init.normal_(p, std=0.01)
    cbs = make(rng, log)
    _reseed(dls)
    err = learn = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # "You are shadowing an attribute": the same on both
            learn = learner_cls(dls, model, loss_func=mnist_loss, opt_func=kwargs.pop('opt_func', SGD), lr=0.1,
                                metrics=batch_accuracy, cbs=cbs, path=tmp_path, **kwargs)
            log.learn = learn
            fit(learn)
    except Exception as e: err = (type(e).__name__, str(e))
    if learn is None: return dict(log=list(log), err=err, values=[], losses=[], lrs=[], iters=[], learn=None,
                                  weights=[p.detach().clone() for p in model.parameters()])
    rec = learn.recorder.__dict__  # what the recorder holds (a fit cancelled early leaves some of it unset)
    return dict(log=list(log), err=err, values=[list(map(float, v)) for v in rec.get('values', [])],
                losses=[float(o) for o in rec.get('losses', [])], lrs=list(rec.get('lrs', [])),
                iters=list(rec.get('iters', [])),
                weights=[p.detach().clone() for p in learn.model.parameters()], learn=learn)


def _same(a, b):
    assert b['err'] == a['err']
    assert b['log'] == a['log']
    assert b['values'] == a['values'] and b['losses'] == a['losses'] and b['lrs'] == a['lrs'] and b['iters'] == a['iters']
    assert all(torch.equal(x, y) for x, y in zip(a['weights'], b['weights']))


def _both(dls, make, tmp_path, **kwargs):
    ref, ours = _run(Learner, dls, make, tmp_path, **kwargs), _run(BinaryLearner, dls, make, tmp_path, **kwargs)
    _same(ref, ours)
    return ref, ours


def _generated(rng, log):
    "A random set of 2 to 7 callbacks of random kinds and orders"
    cbs = []
    for i in range(rng.randint(2, 7)):
        cb = rng.choice(KINDS)(rng, log, i)
        if rng.random() < 0.6: cb.order = rng.choice([-20, -1, 0, 0, 5, 10.5, 50, 50, 90])
        cbs.append(cb)
    return cbs


@pytest.mark.parametrize('seed', range(40))
def test_generated_callback_sets(dls, tmp_path, seed, capsys):
    ref, ours = _both(dls, _generated, tmp_path, seed=seed, model_fn=_model)
    assert len(ours['log']) > 0


def test_generated_sets_cover_every_kind():
    "The 40 seeds above build every kind of callback (and models with event names)"
    kinds = set()
    for seed in range(40):
        rng, log = random.Random(seed), Log()
        _model(rng, log)
        for cb in _generated(rng, log): kinds.add(type(cb).__name__.rstrip('0123456789'))
    assert kinds >= {'Plain', 'OwnCall', 'Delegating', 'Attrs', 'Kw', 'Flags', 'Unhashable', 'Data', '_Duck', 'Canceller',
                     'Changer'}


@pytest.mark.parametrize('exc', CANCELS, ids=lambda e: e.__name__)
def test_each_cancel_exception_at_each_event(dls, tmp_path, exc, capsys):
    "Each cancel exception raised at each event (its 1st and 4th time), among logging callbacks before and after it"
    raised = 0
    for at in EVENTS:
        def make(rng, log):
            return [_plain(random.Random(1), log, 'before'), _canceller(rng, log, 0, exc=exc, at=at),
                    _own_call(random.Random(2), log, 'after')]
        ref, ours = _both(dls, make, tmp_path)
        raised += any(who == 'cancel0' for who, *_ in ours['log'])
    assert raised >= 17  # every event a fit without cancellations has (the `after_cancel_*` ones only follow a cancel)


# ---------------------------------------------------------------------------------------------------------------
# fastai's schedules, callbacks and optimizers

def _loggers(rng, log): return [_plain(random.Random(3), log, 'a'), _own_call(random.Random(4), log, 'b')]


@pytest.mark.parametrize('opt', [dict(), dict(wd=0.1), dict(mom=0.9), dict(mom=0.9, wd=0.1),
                                 dict(mom=0.9, wd=0.1, decouple_wd=False)], ids=str)
def test_fit_one_cycle_and_fastais_sgd(dls, tmp_path, opt, capsys):
    ref, ours = _both(dls, _loggers, tmp_path, fit=lambda l: l.fit_one_cycle(2, 0.1), opt_func=partial(SGD, **opt))


def test_lr_find(dls, tmp_path, capsys):
    res = {}
    ref, ours = _both(dls, _loggers, tmp_path, fit=lambda l: res.setdefault(type(l), l.lr_find(num_it=20, show_plot=False)))
    assert res[Learner] == res[BinaryLearner] and len(ours['lrs']) > 5


def test_gradient_accumulation(dls, tmp_path, capsys):
    ref, ours = _both(dls, lambda rng, log: [GradientAccumulation(n_acc=600)] + _loggers(rng, log), tmp_path)
    assert any(e == 'call:after_cancel_batch' for _, e, *_ in ours['log'])  # the skipped steps, as fastai


def test_mixed_precision(dls, tmp_path, capsys):
    "fastai's `MixedPrecision` autocasts on CUDA only: on a machine without a GPU it runs its events in float32"
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*CUDA is not available.*')
        ref, ours = _both(dls, lambda rng, log: [MixedPrecision(amp_mode='bf16')] + _loggers(rng, log), tmp_path)
    assert not ours['err']


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fastai's MixedPrecision autocasts on CUDA only: no GPU here")
@pytest.mark.parametrize('mode', ['fp16', 'bf16'])
def test_mixed_precision_on_gpu(tmp_path, mode, capsys):
    gpu_dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0, device='cuda')
    ref, ours = _both(gpu_dls, lambda rng, log: [MixedPrecision(amp_mode=mode)] + _loggers(rng, log), tmp_path)
    assert not ours['err'] and ours['learn'].mixed_precision.autocast.fast_dtype != torch.float32


# ---------------------------------------------------------------------------------------------------------------
# VerboseCallback and dataclass callbacks, on their own

def test_verbose_callback(dls, tmp_path, capsys):
    from fastai.test_utils import VerboseCallback  # receives every event through its own `__call__`
    outs = []
    for cls in (Learner, BinaryLearner):
        capsys.readouterr()
        learn = cls(dls, nn.Linear(784, 1), loss_func=mnist_loss, opt_func=SGD, metrics=batch_accuracy, path=tmp_path,
                    cbs=VerboseCallback())
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
        outs.append([l for l in capsys.readouterr().out.splitlines() if l in EVENTS])
    assert outs[1] == outs[0] and len(outs[0]) == 73  # `after_create`, then fit(1): 7 training, 2 validation batches


def test_dataclass_callback(dls, tmp_path):
    @dataclass(eq=True)
    class CountBatches(Callback):
        n: int = 0
        def after_batch(self): self.n += 1
    with pytest.raises(TypeError): hash(CountBatches())
    for cls in (Learner, BinaryLearner):
        cb = CountBatches()
        learn = cls(dls, nn.Linear(784, 1), loss_func=mnist_loss, opt_func=SGD, cbs=cb, path=tmp_path)
        with learn.no_bar(), learn.no_logging(): learn.fit(2)
        assert cb.n == 18
        learn.remove_cb(cb)
        assert cb not in learn.cbs


# ---------------------------------------------------------------------------------------------------------------
# The loader: every hook, against a stock `TfmdDL` over the same items

class Double(Transform):
    def encodes(self, x:Tensor): return x*2


def _hooks(calls:list, ds):
    "Each `TfmdDL` hook, as a user would give it; each notes its calls in `calls`"
    def note(name, r):
        calls.append(name)
        return r
    return {
        'none': {},
        'after_item': dict(after_item=[lambda t: note('after_item', t*2)]),  # a `Transform`: each tensor of an item
        'after_item_transform': dict(after_item=[Double()]),
        'before_batch': dict(before_batch=[lambda b: note('before_batch', b[::-1])]),
        'after_batch': dict(after_batch=[lambda t: note('after_batch', t+1)]),
        'create_item': dict(create_item=lambda s: note('create_item', (ds.x[s].flip(0), ds.y[s]))),
        'create_batch': dict(create_batch=lambda b: note('create_batch', tuple(t*3 for t in fa_collate(b)))),
        'do_batch': dict(do_batch=lambda b: note('do_batch', fa_collate(b))),
        'retain': dict(retain=lambda res, b: note('retain', res)),
        'get_idxs': dict(get_idxs=lambda: note('get_idxs', list(range(len(ds)))[::-3])),
        'sample': dict(sample=lambda: note('sample', iter(range(0, len(ds), 2)))),
        'shuffle_fn': dict(shuffle_fn=lambda idxs: note('shuffle_fn', random.Random(len(calls)).sample(idxs, len(idxs)))),
        'create_batches': dict(create_batches=lambda samps: note('create_batches', iter([ds[[0, 1]], ds[[2]]]))),
        'before_iter': dict(before_iter=lambda: note('before_iter', None)),
        'after_iter': dict(after_iter=lambda: note('after_iter', None)),
    }


def _batches(dl, epochs=2) -> list:
    dl.rng = random.Random(7)
    return [[tuple(t.clone() for t in b) for b in dl] for _ in range(epochs)]


@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'fastai_paths'])
@pytest.mark.parametrize('drop_last', [False, True], ids=['keep_last', 'drop_last'])
@pytest.mark.parametrize('shuffle', [False, True], ids=['in_order', 'shuffled'])
def test_loader_hooks_match_a_stock_tfmddl(dls, shuffle, drop_last, fast):
    v = dls.valid.dataset
    ds = DigitsDataset(v.x[:300], v.y[:300], v.vocab)  # 300 images, batch 64: a short last batch
    names = list(_hooks([], ds))
    for name in names:
        calls = ([], [])
        ours = BinaryDigitsDL(ds, bs=64, shuffle=shuffle, drop_last=drop_last, fast=fast, **_hooks(calls[0], ds)[name])
        stock = TfmdDL(ds, bs=64, shuffle=shuffle, drop_last=drop_last, num_workers=0, **_hooks(calls[1], ds)[name])
        if 'shuffle_fn' not in stock.__dict__:  # the package's own shuffling (`torch.randperm` from fastai's `rng`)
            stock.shuffle_fn = partial(BinaryDigitsDL.shuffle_fn, stock)
        a, b = _batches(ours), _batches(stock)
        assert len(a[0]) > 0, name
        assert [[len(x) for x in e] for e in a] == [[len(x) for x in e] for e in b], name
        for ea, eb in zip(a, b):
            for x, y in zip(ea, eb):
                assert all(type(s) is type(t) and torch.equal(s, t) for s, t in zip(x, y)), name
        assert calls[0] == calls[1], name
        if name not in ('none', 'after_item_transform') and (shuffle or name != 'shuffle_fn'): assert calls[0], name
        if name in ('after_item', 'after_item_transform', 'before_batch', 'create_item', 'create_batch', 'do_batch',
                    'retain'):
            assert ours.item_hooks() and not ours._slices(), name  # fastai's own per-item path
        elif fast: assert ours._slices(), name


def test_loader_refuses_what_it_would_ignore(dls):
    ds = dls.valid.dataset
    with pytest.raises(ValueError, match='no worker processes, so fastai would never call `wif`'):
        BinaryDigitsDL(ds, wif=lambda: None)
    with pytest.raises(ValueError, match='takes no worker processes: leave `num_workers` out'):
        BinaryDigitsDL(ds, num_workers=2)
    with pytest.raises(ValueError, match='`num_workers` out, or 0'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, num_workers=4)


def test_loader_hooks_through_from_mnist(tmp_path):
    "Hooks given to `from_mnist` reach both loaders and are called, as fastai calls them"
    seen = []
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0, bs=128,
                                             after_item=[lambda o: (seen.append(1), o)[1]],
                                             before_batch=[lambda b: (seen.append(2), b)[1]])
    learn = binary_learner(dls, seed=0, path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    n = len(dls.train.dataset) + len(dls.valid.dataset)
    assert seen.count(1) == 2*n  # fastai's item `Transform` takes an item's image and its label, one at a time
    assert seen.count(2) == len(dls.train) + len(dls.valid)
    assert learn.recorder.values[-1][-1] > 0.9


def test_indices_from_a_hook_are_read_as_fastai_reads_them(dls):
    "Indices a hook hands over that slicing would read differently (negative, out of range) take fastai's per-item path"
    ds = dls.valid.dataset
    ours = BinaryDigitsDL(ds, bs=4, get_idxs=lambda: [-1, 0, -2])
    stock = TfmdDL(ds, bs=4, num_workers=0, get_idxs=lambda: [-1, 0, -2])
    (a,), (b,) = list(ours), list(stock)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and torch.equal(a[0][0], ds.x[-1])
    bad = BinaryDigitsDL(ds, bs=4, get_idxs=lambda: [0, len(ds)])
    with pytest.raises(IndexError): list(bad)


# ---------------------------------------------------------------------------------------------------------------
# The guard and `fast=False`

def test_the_guard_reads_code_not_version_strings():
    "A release that changes nothing the fast paths mirror keeps them on: faked version strings, no warning"
    import subprocess, sys
    code = ("import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
            "import torch, fastai; torch.__version__ = '2.15.0'; fastai.__version__ = '2.9.0'\n"
            "from fastai_binary_digits import *\n"
            "from fastai.learner import Learner\n"
            "calls = []; one = Learner._call_one\n"
            "dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0)\n"
            "learn = binary_learner(dls, seed=0)\n"
            "with learn.no_bar(), learn.no_logging(): learn.fit(1)\n"
            "from fastai_binary_digits.fastai_internals import fast_paths_checked; print('ON', fast_paths_checked())\n")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and 'ON True' in res.stdout, res.stderr[-2000:]
    assert 'fast paths' not in res.stderr


def test_fingerprints_ignore_comments_and_layout_not_code(tmp_path):
    "The same code reformatted keeps its fingerprint; a changed value or a changed block does not"
    import importlib.util
    sources = dict(a="def f(x):\n    return x+1  # a comment\n", b="def f(x):   # another\n\n    return  x + 1\n",
                   c="def f(x):\n    return x+2\n", d="def f(x):\n    if x: x = 1\n    return x\n",
                   e="def f(x):\n    if x:\n        x = 1\n        return x\n")
    fps = {}
    for name, src in sources.items():  # `inspect.getsource` needs a file
        (tmp_path/f'{name}.py').write_text(src)
        spec = importlib.util.spec_from_file_location(f'fp_{name}', tmp_path/f'{name}.py')
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fps[name] = fastai_internals.fingerprint(mod.f)
    assert fps['a'] == fps['b'] and fps['a'] != fps['c'] and fps['d'] != fps['e']


def _spy(monkeypatch, cls, name, counts):
    f = getattr(cls, name)
    def spy(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return f(*args, **kwargs)
    monkeypatch.setattr(cls, name, spy)


def _fit_with_spies(monkeypatch, tmp_path, **kwargs):
    "Fit a fresh learner; count the calls of fastai's own dispatch and loader iteration"
    fastai_internals.fast_paths_checked()  # read before the spies, which change the code it reads
    counts = {}
    _spy(monkeypatch, Learner, '_call_one', counts)
    _spy(monkeypatch, DataLoader, 'create_batches', counts)
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0)
    learn = binary_learner(dls, seed=0, path=tmp_path, **kwargs)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    return learn, dict(counts)


def _changed_sample(self):
    "fastai's `DataLoader.sample`, as a release that changed it might write it"
    return (b for i, b in enumerate(self._DataLoader__idxs) if i//(self.bs or 1) % self.num_workers == self.offs)


def test_the_guard_takes_fastais_paths_when_mirrored_code_changes(monkeypatch, tmp_path, request):
    fast_learn, fast_counts = _fit_with_spies(monkeypatch, tmp_path)
    assert fast_counts == {'_call_one': 1}  # the fast paths, but for the one event of fastai's `Learner.__init__`
    monkeypatch.undo()  # the spies out of the way: the guard would see them as changed code too
    monkeypatch.setattr(DataLoader, 'sample', _changed_sample)
    fastai_internals.fast_paths_checked.cache_clear()  # read again, now, and after the test
    request.addfinalizer(fastai_internals.fast_paths_checked.cache_clear)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        learn, counts = _fit_with_spies(monkeypatch, tmp_path)
    ours = [str(o.message) for o in w if 'fast paths' in str(o.message)]
    assert len(ours) == 1 and ours[0].startswith('fastai_binary_digits: fastai.data.load.DataLoader.sample differ')
    assert "uses fastai's own code paths instead" in ours[0]
    assert counts['_call_one'] == 73 and counts['create_batches'] == 2  # fastai's dispatch and per-item batches
    assert learn.recorder.values == fast_learn.recorder.values  # the same results, bitwise
    assert all(torch.equal(a, b) for a, b in zip(fast_learn.model.parameters(), learn.model.parameters()))


def test_fast_false_is_that_learners_only(monkeypatch, tmp_path):
    fast_learn, fast_counts = _fit_with_spies(monkeypatch, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no warning: the user chose fastai's paths
        learn, counts = _fit_with_spies(monkeypatch, tmp_path, fast=False)
    assert fast_counts == {'_call_one': 1} and counts['_call_one'] == 73 and counts['create_batches'] == 2
    assert learn.recorder.values == fast_learn.recorder.values
    assert all(torch.equal(a, b) for a, b in zip(fast_learn.model.parameters(), learn.model.parameters()))
    assert all(dl.fast and dl._slices() for dl in learn.dls.loaders)  # the loaders are the user's, unchanged
    later = {}
    for cls, name in ((Learner, '_call_one'), (DataLoader, 'create_batches')): _spy(monkeypatch, cls, name, later)
    default = binary_learner(learn.dls, seed=0, path=tmp_path)  # a default learner on the same loaders: fast
    with default.no_bar(), default.no_logging(): default.fit(1)
    assert later == {'_call_one': 1} and default.recorder.values == fast_learn.recorder.values

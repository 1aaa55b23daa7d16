"All that reaches into fastai's internals, each beside the fastai line it mirrors, and the guard that turns them off"
import hashlib, inspect, io, textwrap, tokenize, warnings
from pkgutil import resolve_name
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, lru_cache
from inspect import getattr_static

import torch
from torch import Tensor, nn
from fastcore.all import GetAttr, L, delegates, sorted_ex
from fastai.callback.core import Callback, event
from fastai.data.core import Pipeline, TfmdDL
from fastai.data.load import DataLoader
from fastai.imports import dispatch
from fastai.learner import Learner
from fastai.torch_core import TensorBase, defaults, to_device

from .checks import BinaryDigitsError
from .plots import plot_digit_losses, show_digits

__all__ = ['fast_paths_checked', 'call_event', 'FastLearner', 'TensorDigits', 'DigitsDataset', 'BinaryDigitsDL',
           'broadcasts_on_cpu']

# The guard: the code the fast paths mirror, by its fingerprint on each fastai (and torch) release they were checked on

MIRRORED = {  # name -> the fingerprints checked; add one after `tests/test_fast_paths*.py` pass on a new release
    'fastai.learner.Learner._call_one': {'bbb59ee613f6'},
    'fastai.learner.Learner.__call__': {'bc5cea7f7d5a'},
    'fastai.learner.Learner.all_batches': {'330ddb4e6d85'},
    'fastai.torch_core.to_device': {'449306b53ebc'},
    'fastai.callback.core.Callback.__call__': {'5d2aa05f075b'},
    'fastai.torch_core.getcallable': {'7a7513adeeb4'},
    'fastcore.basics.GetAttr.__getattr__': {'672162949d44'},
    'fastcore.basics.GetAttr._component_attr_filter': {'d4851252ea8c'},
    'fastcore.basics.sorted_ex': {'29630c7049c4'},
    'fastcore.foundation.L.sorted': {'06f1d43a52c2'},
    'torch.nn.Module.__getattr__': {'a8490b33c474'},
    'fastai.data.load.DataLoader.__iter__': {'0e3a69d7e2b6'},
    'fastai.data.load.DataLoader.sample': {'1c6516aefa53'},
    'fastai.data.load._FakeLoader.__iter__': {'da6b2a92e42c'},
    'fastai.data.core.TfmdDL._one_pass': {'73b88dc6cef1'},
}


def fingerprint(f) -> str:
    "A hash of the source of `f`, its comments and layout left out: a change of code, not of formatting"
    toks = tokenize.generate_tokens(io.StringIO(textwrap.dedent(inspect.getsource(f))).readline)
    code = ' '.join(tokenize.tok_name[t.type] if t.type in (tokenize.INDENT, tokenize.DEDENT) else t.string
                    for t in toks if t.type not in (tokenize.COMMENT, tokenize.NL))
    return hashlib.sha1(code.encode()).hexdigest()[:12]


def _checked(name:str, ok:set) -> bool:
    try: return fingerprint(resolve_name(name)) in ok
    except (ImportError, AttributeError, OSError, TypeError): return False


def changed_code() -> list:
    "The names in `MIRRORED` whose code differs from every fingerprint checked (or cannot be read)"
    return [name for name, ok in MIRRORED.items() if not _checked(name, ok)]


@cache
def fast_paths_checked() -> bool:
    "Whether the fastai and torch code the fast paths mirror is the code they were checked against; warns once if not"
    changed = changed_code()
    if changed:
        warnings.warn(f"fastai_binary_digits: {', '.join(changed)} differ from the code its fast paths (event "
                      "dispatch, slicing loader) were checked against; it uses fastai's own code paths instead (the "
                      "same results, slower)", RuntimeWarning, stacklevel=2)
    return not changed


# Event dispatch: fastai calls every callback at every event; a call is skipped only when it provably does nothing

_FOUND = object()  # a lookup that may find an attribute, or run code of its own


def _is_descriptor(v) -> bool: return hasattr(type(v), '__get__')


@lru_cache(maxsize=1024)
def _plain_lookup(cls, getattr_fn) -> bool:
    "Whether `getattr` on a `cls` instance runs `object.__getattribute__`, then `getattr_fn`, and no other code"
    return (type(cls) is type and getattr_static(cls, '__getattribute__') is object.__getattribute__
            and getattr_static(cls, '__getattr__', None) is getattr_fn)


@lru_cache(maxsize=1024)
def _delegate_name(cls) -> str|None:
    "The attribute that fastcore's `GetAttr` on `cls` delegates to (`_default`), when only fastcore's code runs"
    default = getattr_static(cls, '_default', None)
    plain = (_plain_lookup(cls, GetAttr.__getattr__) and getattr_static(cls, '_xtra', None) is None
             and getattr_static(cls, '_component_attr_filter', None) is GetAttr._component_attr_filter
             and isinstance(default, str) and not _is_descriptor(getattr_static(cls, default, None)))
    return default if plain else None


@lru_cache(maxsize=1024)
def _plain_callback(cls) -> bool:
    "Whether `cb(event)` on a `cls` is fastai's `Callback.__call__` reading plain attributes (no properties)"
    return (getattr_static(cls, '__call__', None) is Callback.__call__ and _delegate_name(cls) is not None
            and not any(_is_descriptor(getattr_static(cls, n, None)) for n in ('run', 'run_train', 'run_valid',
                                                                                'training')))


def _next_lookup(o, name:str):
    "Where `getattr(o, name)` looks next: None (`AttributeError`), the object `GetAttr` delegates to, or `_FOUND`"
    cls, d = type(o), getattr(o, '__dict__', None)
    default = _delegate_name(cls)
    if default is None or d is None or name in d or hasattr(cls, name) or '_default' in d or '_xtra' in d: return _FOUND
    if name == default: return None  # fastcore's `_component_attr_filter`: `k in ('_xtra',self._default)`: False
    return d[default] if default in d else getattr_static(cls, default, None)  # `getattr(self,self._default,None)`


def _misses(o, name:str) -> bool:
    "Whether `getattr(o, name)` provably raises `AttributeError`, running no code but fastcore's and torch's lookups"
    if isinstance(o, nn.Module):  # torch's `Module.__getattr__`: `_parameters`, `_buffers`, `_modules`, AttributeError
        d = o.__dict__
        return (_plain_lookup(type(o), nn.Module.__getattr__) and name not in d and not hasattr(type(o), name)
                and not any(name in d.get(k, ()) for k in ('_parameters', '_buffers', '_modules')))
    target = _next_lookup(o, name)
    return target is None or (target is not _FOUND and _misses(target, name))  # `if attr is not None: getattr(attr,k)`


def call_event(learn, event_name:str):
    "fastai's `Learner._call_one`, without the `cb(event_name)` calls that provably do nothing"
    if not hasattr(event, event_name): raise Exception(f'missing {event_name}')  # as `Learner._call_one`
    learner_misses = None  # whether `getattr(learn, event_name)` raises: read once, and again after a callback ran
    for cb in sorted_ex(learn.cbs, key='order'):  # `self.cbs.sorted('order')`, without making an `L` of it
        # `Callback.__call__`: `getcallable(self, event_name)()`, `getattr(o, attr, noop)`; `after_fit`: `self.run=True`
        target = _next_lookup(cb, event_name) if event_name != 'after_fit' and _plain_callback(type(cb)) else _FOUND
        if target is learn:
            if learner_misses is None: learner_misses = _misses(learn, event_name)
            if learner_misses: continue
        elif target is None or (target is not _FOUND and _misses(target, event_name)): continue
        cb(event_name)
        learner_misses = None


def _on(b, device) -> bool:
    "Whether batch `b` is plain tensors already on `device`, so that fastai's `to_device` would return it as it is"
    return type(b) is tuple and all(type(o) is Tensor and o.device == device for o in b) and defaults.use_cuda != False


_fastai_loaders = ContextVar('fastai_loaders', default=False)  # True while a `fast=False` learner runs its loaders


class FastLearner(Learner):
    "fastai's `Learner`, skipping callback calls proven to do nothing; `fast=False` or unchecked fastai: fastai's paths"
    fast = True  # (pickled learners from before `fast` existed)

    @delegates(Learner.__init__)
    def __init__(self, dls, model, *args, fast:bool=True, **kwargs):
        self.fast = False  # fastai's own paths for the one event of fastai's `__init__`: the guard is read when it pays
        super().__init__(dls, model, *args, **kwargs)
        self.fast = fast  # False: fastai's own code paths, for this learner only

    def _fast(self) -> bool: return self.fast and fast_paths_checked()

    def __call__(self, event_name):
        if self._fast() and isinstance(event_name, str): self._call_one(event_name)  # `L(event_name).map(...)`
        else: super().__call__(event_name)

    def _call_one(self, event_name:str):
        if self._fast() and type(self.cbs) is L: call_event(self, event_name)
        else: super()._call_one(event_name)

    def all_batches(self):
        "fastai's `all_batches`; a `fast=False` learner's loaders iterate as fastai's own"
        token = _fastai_loaders.set(not self.fast)
        try: super().all_batches()
        finally: _fastai_loaders.reset(token)


@contextmanager
def broadcasts_on_cpu():
    "Within it, fastai's `DistributedDL._broadcast` (indices through CUDA, for NCCL) keeps them on CPU for gloo, MPI"
    from fastai.distributed import DistributedDL
    fastai_broadcast = DistributedDL._broadcast
    def _broadcast(self, t, rank):
        if torch.distributed.get_backend() not in ('gloo', 'mpi'): return fastai_broadcast(self, t, rank)
        t = torch.tensor(t, dtype=torch.long)  # `LongTensor(t).cuda()`, on the CPU
        torch.distributed.broadcast(t, rank)
        return t.tolist()
    DistributedDL._broadcast = _broadcast
    try: yield
    finally: DistributedDL._broadcast = fastai_broadcast


# The slicing loader

class TensorDigits(TensorBase):
    "A batch of flattened 28x28 digits: the type fastai's show and interpretation tools dispatch on (batches are plain)"


class DigitsDataset:
    "Digits of a pair as whole tensors: `x` (n, 784) float32 in 0..1, `y` (n, 1) float32 0/1 (or None, unlabelled)"
    n_inp = 1
    def __init__(self, x:Tensor, y:Tensor|None, vocab, indices:Tensor|None=None):
        self.x, self.y, self.vocab, self.indices = x, y, vocab, indices  # `indices`: each image's index in MNIST's file
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        "Rows `i`: an int, a slice (a view), or a 1-d tensor of indices (gathered with `index_select`, 2.5x `x[i]`)"
        ts = (self.x,) if self.y is None else (self.x, self.y)
        if isinstance(i, Tensor) and i.ndim == 1: return tuple(t.index_select(0, i) for t in ts)
        return tuple(t[i] for t in ts)
    def to(self, device):
        return DigitsDataset(self.x.to(device), None if self.y is None else self.y.to(device), self.vocab, self.indices)
    def new_empty(self):
        "An empty copy, for `learn.export()` (a view would pickle the whole storage)"
        return DigitsDataset(self.x.new_empty(0, 784), None if self.y is None else self.y.new_empty(0, 1), self.vocab)
    def decode(self, o, full=True): return (o[0], *(self.vocab[int(t)] for t in o[1:]))  # 0/1 -> the digit
    @property
    def items(self):
        "The rows as `(x, y)` items, as fastai's `Interpretation` reads them to rebuild a `test_dl`"
        return list(zip(self.x, self.y)) if self.y is not None else list(self.x)
    def __repr__(self): return f'{type(self).__name__}({len(self)} images of digits {list(self.vocab)})'


class BinaryDigitsDL(TfmdDL):
    """fastai's `TfmdDL`, its batches sliced out of a `DigitsDataset`; a per-item hook (`after_item`, `create_item`...),
    `fast=False` or unchecked fastai code (`fast_paths_checked`) batches with fastai's own code, calling every hook"""
    fast = True
    _item_methods = ('create_item', 'create_batch', 'do_item', 'do_batch', 'retain', 'chunkify')

    def __init__(self, dataset:DigitsDataset, bs:int=256, shuffle:bool=False, drop_last:bool=False, device=None,
                 fast:bool=True, **kwargs):
        if kwargs.pop('num_workers', None):
            raise BinaryDigitsError("BinaryDigitsDL makes its batches in this process (slices of tensors in memory), "
                                    "so it takes no worker processes: leave `num_workers` out, or 0")
        if kwargs.get('wif') is not None:
            raise BinaryDigitsError("BinaryDigitsDL runs no worker processes, so fastai would never call `wif`: "
                                    "leave it out")
        self.fast = fast  # False: fastai's own item-by-item batching
        super().__init__(dataset, bs=bs, shuffle=shuffle, drop_last=drop_last, device=device, num_workers=0, **kwargs)

    def _fast(self) -> bool: return self.fast and not _fastai_loaders.get() and fast_paths_checked()

    def item_hooks(self) -> list:
        "The per-item hooks, given to this loader or its class, that fastai's item-by-item batching would call"
        d, cls = self.__dict__, type(self)
        hooks = [n for n in ('after_item', 'before_batch') if not (type(d.get(n)) is Pipeline and not d[n].fs)]
        return hooks + [n for n in self._item_methods if n in d or getattr(cls, n) is not getattr(DataLoader, n)]

    def _slices(self) -> bool:
        "Whether slices of the tensors are the batches fastai's item-by-item `create_batches` would make"
        return (self._fast() and type(self.dataset) is DigitsDataset and self.bs is not None and self.indexed
                and not self.item_hooks())

    def _one_pass(self):
        "`TfmdDL._one_pass` finds the batch types fastai decodes with by making a batch; without hooks, they are known"
        if self.item_hooks(): return super()._one_pass()
        self._n_inp, self._types = 1, {tuple: [TensorDigits] + ([] if self.dataset.y is None else [Tensor])}

    def get_idxs(self):
        "fastai's `get_idxs`, a `range` when in order, so that batches are slices"
        return range(self.n) if not self.shuffle and self.n is not None and self.indexed else super().get_idxs()

    def shuffle_fn(self, idxs):
        "`idxs` in a random order drawn by `torch.randperm` from fastai's per-epoch `rng` (so seeds carry over)"
        g = torch.Generator().manual_seed(self.rng.getrandbits(63))
        return list(map(idxs.__getitem__, torch.randperm(len(idxs), generator=g).tolist()))

    def sample(self):
        "fastai's `sample` in one process, `(b for i,b in enumerate(self.__idxs) if i//bs%1==0)`: all, in one go"
        return self._DataLoader__idxs if self._fast() else super().sample()

    def __iter__(self):
        "fastai's `DataLoader.__iter__`, without PyTorch's single-process iterator or moving batches already in place"
        if not self._fast() or self.pin_memory: yield from super().__iter__(); return
        self.randomize()
        self.before_iter()
        self._DataLoader__idxs = self.get_idxs()  # `self.__idxs=self.get_idxs()`
        tfms = not (type(self.after_batch) is Pipeline and not self.after_batch.fs)
        for b in self.create_batches(self.sample()):  # `_FakeLoader.__iter__`: `self.d.create_batches(self.d.sample())`
            if self.device is not None and not _on(b, self.device): b = to_device(b, self.device)
            yield self.after_batch(b) if tfms else b
        self.after_iter()
        if hasattr(self, 'it'): del self.it

    def create_batches(self, samps):
        "fastai's `create_batches`, item by item through every hook, or slices of the tensors when that is the same"
        if not self._slices(): yield from super().create_batches(samps); return
        ds, bs = self.dataset, self.bs
        if isinstance(samps, range) and samps.step == 1 and 0 <= samps.start and samps.stop <= len(ds): take = None
        else:  # shuffled, or a share handed out by `DistributedDL`
            samps = samps if type(samps) is list else list(samps)
            own = not any(n in self.__dict__ or getattr(type(self), n) is not getattr(BinaryDigitsDL, n)
                          for n in ('get_idxs', 'shuffle_fn', 'sample'))  # indices ours: not given, not overridden
            if not (own or all(type(i) is int and 0 <= i < len(ds) for i in samps)):  # indices from a hook: as fastai
                yield from super().create_batches(samps); return
            take = torch.as_tensor(samps, dtype=torch.long, device=ds.x.device)
        start, n = (samps.start if take is None else 0), len(samps)
        for i in range(0, n - n % bs if self.drop_last else n, bs):
            yield ds[start+i:start+i+bs] if take is None else ds[take[i:i+bs]]

    def new(self, dataset=None, cls=None, **kwargs):
        if issubclass(cls or type(self), BinaryDigitsDL): kwargs.setdefault('fast', self.fast)
        return super().new(dataset, cls, **kwargs)

    def to(self, device):
        "Move the loader and its tensors to `device`, so that batches are not copied at every step"
        super().to(device)
        self.dataset = self.dataset.to(self.device)
        return self

    def _pre_show_batch(self, b, max_n:int=9):
        _register_plot_top_losses()  # fastai's `Interpretation.plot_top_losses` calls this just before dispatching
        return super()._pre_show_batch(b, max_n=max_n)

    def show_batch(self, b=None, max_n:int=9, ctxs=None, show:bool=True, unique:bool=False, **kwargs):
        "Show `max_n` digits of batch `b` (default: `one_batch()`) with their labels; returns the figure"
        if b is None: b = self.one_batch()
        if not show: return super().show_batch(b, max_n=max_n, show=False)
        return show_digits(b[0][:max_n], None if len(b) < 2 else [str(self.vocab[int(t)]) for t in b[1][:max_n]],
                           **kwargs)

    def show_results(self, b, out, max_n:int=9, ctxs=None, show:bool=True, **kwargs):
        "Show `max_n` digits with their target and decoded prediction, green when right, red when wrong"
        if not show: return super().show_results(b, out, max_n=max_n, show=False)
        x, p = b[0][:max_n], [self.vocab[int(q)] for q in (out[0] if isinstance(out, (tuple, list)) else out)[:max_n]]
        if len(b) < 2: return show_digits(x, [str(q) for q in p], suptitle='prediction', **kwargs)  # unlabelled
        y = [self.vocab[int(t)] for t in b[1][:max_n]]
        return show_digits(x, [f'{t}/{q}' for t, q in zip(y, p)], suptitle='target/prediction',
                           colors=['green' if t == q else 'red' for t, q in zip(y, p)], **kwargs)


@cache
def _register_plot_top_losses():
    "The digits' `plot_top_losses`, added after fastai's catch-all `(x, y, *args)`: plum keeps the last of equal ranks"
    import fastai.interpret
    def plot_top_losses(x:TensorDigits, y, *args, **kwargs): return plot_digit_losses(*args, **kwargs)
    dispatch(plot_top_losses)

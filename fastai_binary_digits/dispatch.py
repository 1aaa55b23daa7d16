"""fastai's `Learner._call_one` (every callback, in `order`, gets `cb(event_name)`), skipping only the calls proven to
do nothing: a callback whose `__call__` and attribute lookup are fastai's own, that has no `event_name` of its own and
whose `GetAttr` delegation (to the `Learner`, then its model) finds none either. Anything else is called, as fastai does.

The proof reads, at every event: the callbacks and their `order`, each callback's instance attributes, its class's
event methods, its delegation target, and the learner's and the model's attributes of that name. Once per class it
reads the machinery around them (`__call__`, `__getattribute__`, `__getattr__`, `GetAttr`'s filter, `_default`,
`_xtra`, `run` flags): a class whose machinery is edited in the middle of a fit is not re-read."""
from __future__ import annotations
from . import compat  # first: it imports fastai with fastai's import-time warning hidden
from fastai.callback.core import Callback, event
from fastcore.basics import GetAttr
from torch import nn

__all__ = ['call_event']

_MISSING = object()
_CB_CALL, _OBJ_GETATTRIBUTE = Callback.__call__, object.__getattribute__
_GETATTR, _FILTER, _MODULE_GETATTR = GetAttr.__getattr__, GetAttr._component_attr_filter, nn.Module.__getattr__


def _static(cls, name:str, default=_MISSING):
    "`name` on class `cls` without running any code (as `inspect.getattr_static`)"
    for k in cls.__mro__:
        d = k.__dict__
        if name in d: return d[name]
    return default


def _plain(v) -> bool:
    "Whether reading a class attribute `v` through an instance runs no code (not a descriptor)"
    return v is _MISSING or not hasattr(type(v), '__get__')


_profiles = {}  # (id(class), kind) -> (class, profile): the class is kept, so its id is never reused


def _profile(cls, kind:str):
    "What fastai's lookup of an event on an instance of `cls` involves, or None when it may run code of its own"
    hit = _profiles.get((id(cls), kind))
    if hit is not None and hit[0] is cls: return hit[1]
    prof = _make_profile(cls, kind)
    if len(_profiles) > 4096: _profiles.clear()
    _profiles[(id(cls), kind)] = (cls, prof)
    return prof


def _make_profile(cls, kind:str):
    if type(cls) is not type or _static(cls, '__getattribute__') is not _OBJ_GETATTRIBUTE: return None
    if kind == 'module':  # a torch module: `nn.Module.__getattr__` looks in its parameters, buffers and submodules
        return () if _static(cls, '__getattr__') is _MODULE_GETATTR else None
    if _static(cls, '__getattr__') is not _GETATTR or _static(cls, '_component_attr_filter') is not _FILTER: return None
    default = _static(cls, '_default')
    if type(default) is not str or not default.isidentifier() or _static(cls, '_xtra', None) is not None: return None
    target = _static(cls, default, None)
    if not _plain(target): return None
    if kind == 'callback':
        if _static(cls, '__call__') is not _CB_CALL: return None
        if not all(_plain(_static(cls, n)) for n in ('run', 'run_train', 'run_valid', 'training')): return None
    return default, target


def _delegates_to(o, prof, name:str):
    "The object `GetAttr` delegation of `o` (with class profile `prof`) looks `name` up on; None: no delegation"
    d = o.__dict__
    if '_default' in d or '_xtra' in d: return _MISSING  # set on the instance: not worth proving
    default, target = prof
    if name == default: return None  # `GetAttr`'s filter: `AttributeError`
    return d.get(default, target)


def _learner_finds(learn, name:str):
    "Whether `getattr(learn, name)` finds something (True), raises `AttributeError` and nothing else (False), or unknown (None)"
    cls = type(learn)
    hit = _profiles.get((id(cls), 'learner'))  # `_profile`, inlined here and below: this runs at nearly every event
    prof = hit[1] if hit is not None and hit[0] is cls else _profile(cls, 'learner')
    if prof is None: return None
    d = learn.__dict__
    if name in d or hasattr(cls, name): return True
    # `_delegates_to(learn, prof, name)`, inlined
    if '_default' in d or '_xtra' in d: return None
    if name == prof[0]: return False
    model = d.get(prof[0], prof[1])
    if model is None: return False
    mcls = type(model)
    hit = _profiles.get((id(mcls), 'module'))
    mprof = hit[1] if hit is not None and hit[0] is mcls else (_profile(mcls, 'module') if isinstance(model, nn.Module)
                                                              else None)
    if mprof is None: return None
    md = model.__dict__
    if name in md or hasattr(mcls, name): return True
    for k in ('_parameters', '_buffers', '_modules'):
        if name in md.get(k, ()): return True
    return False


def call_event(learn, event_name:str):
    "fastai's `Learner._call_one(learn, event_name)`, without the `cb(event_name)` calls that provably do nothing"
    if not hasattr(event, event_name): raise Exception(f'missing {event_name}')
    cbs = list(learn.cbs.items)
    if len(cbs) > 1:  # fastai's `cbs.sorted('order')`: the same keys, the same (stable) sort
        orders = [getattr(cb, 'order', 0) for cb in cbs]
        cbs = [cbs[i] for i in sorted(range(len(cbs)), key=orders.__getitem__)]
    if event_name == 'after_fit':  # at `after_fit`, `Callback.__call__` sets `run` back to True: every one is called
        for cb in cbs: cb(event_name)
        return
    learner_finds = _MISSING  # what `_learner_finds` says; read again after any callback has run
    for cb in cbs:
        cls = type(cb)
        hit = _profiles.get((id(cls), 'callback'))  # `_profile`, inlined: this runs for every callback at every event
        prof = hit[1] if hit is not None and hit[0] is cls else _profile(cls, 'callback')
        if prof is not None:
            d = cb.__dict__
            if event_name not in d and not hasattr(cls, event_name):
                # `_delegates_to(cb, prof, event_name)`, inlined
                if '_default' in d or '_xtra' in d: target = _MISSING
                else: target = None if event_name == prof[0] else d.get(prof[0], prof[1])
                if target is None: continue
                if target is learn:
                    if learner_finds is _MISSING: learner_finds = _learner_finds(learn, event_name)
                    if learner_finds is False: continue
        cb(event_name)
        learner_finds = _MISSING

"Chapter 4 of the fastai book as a tool: classify any pair of MNIST digits with fastai, from scratch to `Learner`"
__version__ = '0.1.0'

_API_MODULES = ('data', 'losses', 'models', 'learner', 'pair_check', 'plots', 'prepare', 'demo')  # `import *` gives


def _load_api():
    "Import the API (and fastai) into this module on first use of its names (PEP 562): `--help` needs no fastai"
    import warnings
    from importlib import import_module
    with warnings.catch_warnings():  # fastai's layers call the deprecated `torch.jit.script` on import: not for users
        warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
        mods = [import_module(f'.{m}', __name__) for m in _API_MODULES]
    g = globals()
    for m in mods: g.update({n: getattr(m, n) for n in m.__all__})
    g['__all__'] = [n for m in mods for n in m.__all__]


def __getattr__(name:str):
    if name.startswith('__') and name != '__all__': raise AttributeError(name)  # `__path__`, `__wrapped__`: not ours
    _load_api()
    try: return globals()[name]
    except KeyError: raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__(): return sorted(set(globals()) | set(__getattr__('__all__')))

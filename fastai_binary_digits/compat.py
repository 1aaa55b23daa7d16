"""The fastai and PyTorch versions the fast paths (event dispatch, batched SGD step, slicing loader) are checked on.
On any other version the package takes fastai's own code paths, with one warning."""
from __future__ import annotations
import warnings
from functools import cache

import fastai, fastai.imports, torch  # `fastai.imports` sets fastai's own warning filters, as for any fastai user
with warnings.catch_warnings():
    # fastai's layers.py calls the deprecated `torch.jit.script` when first imported: not the user's to act on. Every
    # module of the package that imports fastai imports this one first, so that warning is hidden there and nowhere
    # else (the filters are left as they were; `tests/test_side_effects.py` checks both)
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
    import fastai.layers
from packaging.version import InvalidVersion, Version

__all__ = ['CHECKED', 'fast_paths_checked', 'unchecked']

# (oldest, newest) release checked, both included: `tests/test_fast_paths.py` and `tests/test_fast_paths_differential.py`
# run on the newest fastai and, in `.ci/run`, on the oldest (the floor in pyproject.toml), beside the same torch
CHECKED = {'fastai': ('2.8.8', '2.8.12'), 'torch': ('2.14.1', '2.14.1')}


def unchecked(versions:dict|None=None) -> list:
    "The packages (of `versions`, name -> version; default: those installed) whose version is outside `CHECKED`"
    if versions is None: versions = {'fastai': fastai.__version__, 'torch': torch.__version__}
    out = []
    for name, v in versions.items():
        lo, hi = CHECKED[name]
        try: ok = Version(lo) <= Version(Version(v).public) <= Version(hi)  # `public`: '2.14.1+cu130' is 2.14.1
        except InvalidVersion: ok = False
        if not ok: out.append(f'{name} {v}')
    return out


@cache
def fast_paths_checked() -> bool:
    "Whether the installed fastai and torch are versions the fast paths are checked on; warns once when they are not"
    bad = unchecked()
    if bad:
        checked = ' and '.join(f'{n} {lo}' + ('' if lo == hi else f' to {hi}') for n, (lo, hi) in CHECKED.items())
        warnings.warn(f"fastai_binary_digits: its fast paths (event dispatch, batched SGD step, slicing loader) are "
                      f"checked on {checked}, not on {', '.join(bad)}: it uses fastai's own code paths instead "
                      f"(the same results, slower)", RuntimeWarning, stacklevel=2)
    return not bad

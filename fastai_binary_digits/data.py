"`BinaryDigitsDataLoaders`: two MNIST digits as whole tensors, served to fastai by slicing"
from __future__ import annotations
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from .compat import fast_paths_checked
from fastcore.meta import delegates
from fastai.torch_core import TensorBase, default_device, defaults, to_device
from fastai.data.core import DataLoaders, Pipeline, TfmdDL
from fastai.data.load import DataLoader
from fastai.data.transforms import CategoryMap
from fastai.imports import dispatch

from .mnist import find_source, load_source
from .plots import _grid_axes
from .prepare import load_image, prepare_digit

__all__ = ['DigitTensors', 'BinaryDigitsDL', 'BinaryDigitsDataLoaders', 'TensorDigits', 'check_pair', 'check_device']


class TensorDigits(TensorBase):
    "A batch of flattened 28x28 digits; the type fastai's show and interpretation tools dispatch on (batches stay plain)"


def check_pair(pair) -> tuple:
    "`pair` as a tuple of two distinct ints 0-9, or a clear error (a string such as '37' and booleans are refused)"
    msg = f"`pair` must be two distinct digits 0-9, such as (4, 8), got {pair!r}"
    if isinstance(pair, (str, bytes)): raise ValueError(f"{msg}: a string, not two numbers; write (3, 7), not '37'")
    try: a, b = (int(d) for d in pair)
    except (TypeError, ValueError): a = b = None
    if a is not None and any(isinstance(d, (bool, np.bool_)) for d in pair):
        raise ValueError(f"{msg}: True and False are not digits")
    if a is None or a == b or not (0 <= a <= 9 and 0 <= b <= 9) or any(isinstance(d, float) and d != int(d) for d in pair):
        raise ValueError(msg)
    return a, b


def check_device(device) -> torch.device:
    "`device` (or fastai's `default_device()` when None) as a `torch.device` that this machine has, or a clear error"
    if device is None: return default_device()
    try: device = torch.device(device)
    except (RuntimeError, TypeError) as e: raise ValueError(f"`device` {device!r} is not a device name: {e}") from e
    if device.type == 'cuda':
        n = torch.cuda.device_count()
        if n == 0: raise ValueError(f"`device` {device} asked for a GPU, but this machine has none that PyTorch can use; "
                                    "use device='cpu' (or leave it out for fastai's default_device())")
        if (device.index or 0) >= n: raise ValueError(f"`device` {device} does not exist: this machine has {n} GPU(s)")
    elif device.type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError(f"`device` {device} is not available on this machine; use device='cpu'")
    return device


class DigitTensors:
    "Digits of a pair as whole tensors: `x` (n, 784) float32 in 0..1, `y` (n, 1) float32 0/1 (or None, unlabelled)"
    n_inp = 1
    def __init__(self, x:Tensor, y:Tensor|None, vocab, indices:Tensor|None=None):
        self.x, self.y, self.vocab = x, y, vocab
        self.indices = indices  # each image's index in the original MNIST file, when known
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        "Rows `i`: an int, a slice (a view), or a 1-d tensor of indices (gathered with `index_select`, 2.5x `x[i]`)"
        ts = (self.x,) if self.y is None else (self.x, self.y)
        if isinstance(i, Tensor) and i.ndim == 1: return tuple(t.index_select(0, i) for t in ts)
        return tuple(t[i] for t in ts)
    def to(self, device):
        return DigitTensors(self.x.to(device), None if self.y is None else self.y.to(device), self.vocab, self.indices)
    def new_empty(self):
        "An empty copy, for `learn.export()` (a view would pickle the whole storage)"
        return DigitTensors(self.x.new_empty(0, 784), None if self.y is None else self.y.new_empty(0, 1), self.vocab)
    def decode(self, o, full=True):
        "Turn a target or prediction (0/1) into its digit"
        return (o[0], *(self.vocab[int(t)] for t in o[1:]))
    @property
    def items(self):
        "The rows as `(x, y)` items, as fastai's `Interpretation` reads them to rebuild a `test_dl`"
        return list(zip(self.x, self.y)) if self.y is not None else list(self.x)
    def __repr__(self): return f'{type(self).__name__}({len(self)} images of digits {list(self.vocab)})'


def _on(b, device) -> bool:
    "Whether batch `b` is a tuple of plain tensors already on `device` (so fastai's `to_device` would return it as is)"
    return type(b) is tuple and all(type(o) is Tensor and o.device == device for o in b)


def _images_to_x(images:Tensor, device=None) -> Tensor:
    "uint8 (n, 28, 28) -> float32 (n, 784) in 0..1, on `device`"
    flat = images.flatten(1)
    if flat.device.type == 'cpu' and (device is None or torch.device(device).type == 'cpu'):
        return _cpu_empty(flat.shape, torch.float32).copy_(flat).div_(255)
    return flat.to(device).float().div_(255)


def _cpu_empty(shape, dtype) -> Tensor:
    """An uninitialised CPU tensor in memory from numpy, which asks the OS for huge pages for large arrays: on small
    pages, the page faults of a fresh tensor of a few MB cost several times the copy or conversion that fills it"""
    return torch.from_numpy(np.empty(shape, torch.empty(0, dtype=dtype).numpy().dtype))


def _as_image(o) -> np.ndarray:
    "Any image (file path, PIL image, array, tensor; any size, RGB or greyscale) resized whole to a 28x28 uint8 array"
    from PIL import Image
    o = load_image(o).convert('L')
    if o.size != (28, 28): o = o.resize((28, 28), Image.BILINEAR)
    return np.asarray(o)


def _is_row(o) -> bool:
    "Whether `o` is a row as the loaders serve it (784 floats): one of `DigitTensors.items`, as fastai's tools pass back"
    return isinstance(o, (Tensor, np.ndarray)) and o.ndim == 1 and o.shape[0] == 784


class BinaryDigitsDL(TfmdDL):
    """A fastai `TfmdDL` that slices batches out of a `DigitTensors` rather than collating items one by one. Given a
    per-item hook (`after_item`, `before_batch`, `create_item`, `create_batch`, `do_batch`, `retain`, ...), it makes
    batches with fastai's own per-item code, so every hook is called as fastai calls it; `fast=False`, or a fastai or
    torch version the slicing is not checked on (`fastai_binary_digits.compat`), does too"""
    fast = True  # False: fastai's own `DataLoader` iteration, item by item (`binary_learner(fast=False)` sets it)
    _item_methods = ('create_item', 'create_batch', 'do_item', 'do_batch', 'retain', 'chunkify')  # fastai's, unless given

    def __init__(self, dataset:DigitTensors, bs:int=256, shuffle:bool=False, drop_last:bool=False, device=None,
                 fast:bool=True, **kwargs):
        if kwargs.get('num_workers'):
            raise ValueError(f"BinaryDigitsDL makes its batches in this process (slices of tensors already in memory), "
                             f"so it takes no worker processes: leave `num_workers` out, or 0 (got {kwargs['num_workers']!r})")
        if kwargs.get('wif') is not None:
            raise ValueError("BinaryDigitsDL runs no worker processes, so fastai would never call `wif` (its worker "
                             "init hook): leave `wif` out")
        kwargs['num_workers'] = 0
        self.fast = fast
        super().__init__(dataset, bs=bs, shuffle=shuffle, drop_last=drop_last, device=device, **kwargs)

    def _fast(self) -> bool: return self.fast and fast_paths_checked()

    def item_hooks(self) -> list:
        "The per-item hooks, given to this loader or its class, that fastai's item-by-item batching would call"
        d, cls = self.__dict__, type(self)
        hooks = [n for n in ('after_item', 'before_batch') if not (type(d.get(n)) is Pipeline and not d[n].fs)]
        return hooks + [n for n in self._item_methods if n in d or getattr(cls, n) is not getattr(DataLoader, n)]

    def _slices(self) -> bool:
        "Whether slicing `DigitTensors` gives the batches fastai's item-by-item `create_batches` would"
        return (self._fast() and type(self.dataset) is DigitTensors and self.bs is not None and self.indexed
                and not self.item_hooks())

    def _own_indices(self) -> bool:
        "Whether this epoch's indices come from this class's `get_idxs`, `shuffle_fn` and `sample` (valid, in range)"
        d, cls = self.__dict__, type(self)
        return not any(n in d or getattr(cls, n) is not getattr(BinaryDigitsDL, n) for n in ('get_idxs', 'shuffle_fn', 'sample'))

    def _one_pass(self):
        "The batch types fastai decodes with (`show_batch`, interpretation); batches themselves stay plain tensors"
        if self.item_hooks(): return super()._one_pass()  # the hooks may change what a batch holds: fastai finds out
        self._n_inp = 1
        self._types = {tuple: [TensorDigits] + ([] if self.dataset.y is None else [Tensor])}

    def get_idxs(self):
        "fastai's `get_idxs` (shuffled by `shuffle_fn`), as a `range` when in order, so that batches are slices"
        if self.shuffle or self.n is None or not self.indexed: return super().get_idxs()
        return range(self.n)

    def shuffle_fn(self, idxs):
        "`idxs` in a random order, drawn by `torch.randperm` from fastai's per-epoch `rng` (so seeds carry over)"
        g = torch.Generator().manual_seed(self.rng.getrandbits(63))
        return list(map(idxs.__getitem__, torch.randperm(len(idxs), generator=g).tolist()))  # a list, as fastai's

    def sample(self):
        "All of this epoch's indices at once (one process, no workers) rather than fastai's generator of them"
        return self._DataLoader__idxs if self._fast() else super().sample()

    def new(self, dataset=None, cls=None, **kwargs):
        if issubclass(cls or type(self), BinaryDigitsDL): kwargs.setdefault('fast', self.fast)
        return super().new(dataset, cls, **kwargs)

    def __iter__(self):
        "fastai's `DataLoader.__iter__`, without PyTorch's single-process iterator or moving batches already on `device`"
        if self.pin_memory or self.fake_l.num_workers or not self._fast(): yield from super().__iter__(); return
        self.randomize()
        self.before_iter()
        self._DataLoader__idxs = self.get_idxs()
        device, after_batch = self.device, self.after_batch
        skip_tfms = type(after_batch) is Pipeline and not after_batch.fs
        always_move = defaults.use_cuda == False  # then fastai's `to_device` sends batches to the CPU, whatever `device`
        for b in self.create_batches(self.sample()):
            if device is not None and (always_move or not _on(b, device)): b = to_device(b, device)
            yield b if skip_tfms else after_batch(b)
        self.after_iter()
        if hasattr(self, 'it'): del self.it

    def create_batches(self, samps):
        "fastai's `create_batches` (item by item, through every hook), as slices of the tensors when that is the same"
        if not self._slices(): yield from super().create_batches(samps); return
        ds, bs = self.dataset, self.bs
        if isinstance(samps, range) and samps.step == 1 and 0 <= samps.start and samps.stop <= len(ds):
            idxs = None  # in order: slices are views, nothing is copied
            n, start = len(samps), samps.start
        else:            # shuffled, or a share handed over by `DistributedDL`
            samps = samps if type(samps) is list else list(samps)
            if not (self._own_indices() or all(type(i) is int and 0 <= i < len(ds) for i in samps)):
                yield from super().create_batches(samps); return  # indices from a hook: fastai reads each as it does
            idxs = torch.as_tensor(samps, dtype=torch.long, device=ds.x.device)
            n, start = len(idxs), 0
        for i in range(0, n, bs):
            if self.drop_last and i + bs > n: break
            yield ds[start+i:start+i+bs] if idxs is None else ds[idxs[i:i+bs]]

    def to(self, device):
        "Move the loader and its tensors to `device`, so batches are not copied on every step"
        super().to(device)
        self.dataset = self.dataset.to(self.device)
        return self

    def _pre_show_batch(self, b, max_n:int=9):
        _register_plot_top_losses()  # fastai's `Interpretation.plot_top_losses` calls this just before dispatching
        return super()._pre_show_batch(b, max_n=max_n)

    def show_batch(self, b=None, max_n:int=9, ctxs=None, show:bool=True, unique:bool=False, **kwargs):
        "Show `max_n` digits of batch `b` (default: `one_batch()`) with their labels"
        if b is None: b = self.one_batch()
        if not show: return super().show_batch(b, max_n=max_n, show=False)
        x, y = b[0], (b[1] if len(b) > 1 else None)
        titles = None if y is None else [str(self.vocab[int(t)]) for t in y[:max_n]]
        return _show_digits(x[:max_n], titles, **kwargs)

    def show_results(self, b, out, max_n:int=9, ctxs=None, show:bool=True, **kwargs):
        "Show `max_n` digits with their target and decoded prediction, green when right, red when wrong"
        if not show: return super().show_results(b, out, max_n=max_n, show=False)
        x, p = b[0][:max_n], (out[0] if isinstance(out, (tuple, list)) else out)[:max_n]
        if len(b) < 2:  # unlabelled images (a `test_dl` of a person's own): the predictions alone
            return _show_digits(x, [str(self.vocab[int(q)]) for q in p], suptitle='prediction', **kwargs)
        y = b[1][:max_n]
        titles = [f'{self.vocab[int(t)]}/{self.vocab[int(q)]}' for t, q in zip(y, p)]
        colors = ['green' if int(t) == int(q) else 'red' for t, q in zip(y, p)]
        return _show_digits(x, titles, colors=colors, suptitle='target/prediction', **kwargs)


def _show_digits(x, titles=None, colors=None, suptitle=None, ncols=None, figsize=None, **kwargs):
    "A grid of 28x28 digits with titles; returns the figure"
    fig, axs = _grid_axes(len(x), ncols, figsize)
    for i, ax in enumerate(axs):
        ax.imshow(x[i].detach().cpu().reshape(28, 28).numpy(), cmap='Greys', vmin=0, vmax=1)
        if titles is not None: ax.set_title(titles[i], **({} if colors is None else dict(color=colors[i])))
    if suptitle: fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _plot_top_losses(x:TensorDigits, y, *args, **kwargs):
    "fastai's `ClassificationInterpretation.plot_top_losses` for digits: the digit, the prediction and its probability"
    samples, outs, raws, losses = args
    # `raws` hold the probability of pair[1]; the prediction is the likelier digit. (The loss is left out: with
    # `mnist_loss` it is the probability of the other digit, so it would only repeat the same number.)
    titles = [f'{s[1]}/{o[0]}/{max(r.item(), 1-r.item()):.2f}' for s, o, r in zip(samples, outs, raws)]
    x = torch.stack([s[0].as_subclass(Tensor) for s in samples])
    return _show_digits(x, titles, ncols=kwargs.get('ncols'), figsize=kwargs.get('figsize'),
                        suptitle='Actual/Prediction/Probability of the prediction')


def _register_plot_top_losses():
    """Add `_plot_top_losses` to fastai's `plot_top_losses`, once fastai's catch-all `(x, y, *args)` is defined:
    plum ranks the two signatures alike and keeps the one registered last (registered earlier, ours would be lost)"""
    import fastai.interpret
    f = fastai.interpret.plot_top_losses
    if not getattr(f, '_binary_digits', False):
        _plot_top_losses.__name__ = 'plot_top_losses'
        dispatch(_plot_top_losses)
        f._binary_digits = True


class BinaryDigitsDataLoaders(DataLoaders):
    "fastai `DataLoaders` for a pair of MNIST digits: label 0 for `pair[0]`, label 1 for `pair[1]`, as in the book"

    @classmethod
    @delegates(BinaryDigitsDL.__init__, but=['dataset', 'shuffle', 'device'])
    def from_mnist(cls,
        pair:tuple=(3, 7),            # the two digits: label 0 for pair[0], label 1 for pair[1]
        path:str|Path|None=None,      # mnist_png or IDX folder; None: fastai's `untar_data(URLs.MNIST)`
        sample:bool=False,            # use the MNIST sample bundled with the package (offline)
        valid:str='split',            # 'split': `valid_pct` of the training images; 'testing': the official test set
        valid_pct:float=0.2,          # share of the training images held out for validation when `valid='split'`
        seed:int|None=None,           # seed of the random validation split (None: a different split each time)
        bs:int=256,                   # batch size
        device=None,                  # where batches live; None: fastai's `default_device()`
        cache:bool=True,              # cache decoded PNGs beside the data, so later loads skip the decoding
        prepare:bool=True,            # `test_dl` (so `predict`) makes each image look like MNIST's with `prepare_digit`
        **kwargs,
    ) -> 'BinaryDigitsDataLoaders':
        "Load digits `pair` of MNIST as flattened 0..1 images, split into training and validation, held on `device`"
        pair = check_pair(pair)
        _check_prepare(prepare)
        if valid not in ('split', 'testing'):
            raise ValueError(f"`valid` must be 'split' (hold out `valid_pct` of training) or 'testing', got {valid!r}")
        if valid == 'split' and not (isinstance(valid_pct, (int, float)) and 0 < valid_pct < 1):
            raise ValueError(f"`valid_pct` must be a fraction between 0 and 1 (exclusive), such as 0.2, got {valid_pct!r}")
        if not isinstance(bs, (int, np.integer)) or isinstance(bs, bool) or bs < 1:
            raise ValueError(f"`bs` must be a whole number of at least 1, got {bs!r}")
        device = check_device(device)
        source = find_source(path, sample)
        splits = ('training', 'testing') if valid == 'testing' else ('training',)
        digits = {split: load_source(source, pair, split, cache) for split in splits}
        for split in splits:
            empty = [d for d in pair if not len(digits[split][d][0])]
            if empty: raise ValueError(f"{source[1]} holds no {split} images of the digit {empty[0]}: choose a pair "
                                       "of digits that it holds")
        train = _pair_tensors(digits['training'], pair)
        if valid == 'testing':
            valid_ds = _pair_tensors(digits['testing'], pair)
        else:
            n = len(train[0])
            g = torch.Generator()
            if seed is None: g.seed()
            else: g.manual_seed(seed)
            perm = torch.randperm(n, generator=g)
            cut = int(valid_pct*n)
            if cut == 0:
                raise ValueError(f"`valid_pct` {valid_pct} holds out no image of the {n:,} training images of {pair} "
                                 f"(int({valid_pct} * {n:,}) is 0): give at least 1/{n:,}, such as 0.2")
            vi, ti = perm[:cut].sort().values, perm[cut:].sort().values
            valid_ds = tuple(t.index_select(0, vi) for t in train)  # `index_select`: many times `t[vi]`'s speed here
            train = tuple(t.index_select(0, ti) for t in train)
        vocab = CategoryMap(list(pair), sort=False)
        mk = lambda t: DigitTensors(_images_to_x(t[0], device), t[1].to(device), vocab, t[2])
        trn_dl = BinaryDigitsDL(mk(train), bs=bs, shuffle=True, device=device, **kwargs)
        val_dl = BinaryDigitsDL(mk(valid_ds), bs=bs, shuffle=False, device=device, **kwargs)
        # fastai saves models under `dls.path`: the data's folder, as for `untar_data` users; never inside the package
        dls = cls(trn_dl, val_dl, path='.' if sample else source[1], device=device)
        dls.prepare = prepare
        return dls

    prepare = True  # (learners exported before this setting existed prepare their images, as new ones do)

    def new_empty(self):
        "fastai's `new_empty` (what `learn.export()` saves), keeping `prepare`"
        res = super().new_empty()
        res.prepare = self.prepare
        return res

    def test_dl(self, test_items, rm_type_tfms=None, with_labels:bool=False, prepare:bool|None=None,
                **kwargs) -> BinaryDigitsDL:
        """A loader of `test_items` (file paths, PIL images, arrays or tensors; `(image, label)` pairs if `with_labels`),
        each made to look like MNIST's by `prepare_digit` when `prepare` (None: `self.prepare`), else resized whole.
        The loader's `found` (a bool tensor) says which images held a digit; the others are served as blank images."""
        kwargs.pop('process', None)  # passed by fastai's `Interpretation`; there is nothing to process here
        prepare = _check_prepare(self.prepare if prepare is None else prepare)
        items = list(test_items)
        if not items: raise ValueError("`test_items` is empty: give at least one image")
        ys = None
        if with_labels:
            items, ys = zip(*items)
            ys = torch.tensor([float(y) for y in ys]).view(-1, 1)
            if not ((ys == 0) | (ys == 1)).all():
                raise ValueError(f"Labels given with `with_labels=True` must be 0 or 1 (0 for {self.vocab[0]}, "
                                 f"1 for {self.vocab[1]}), got {ys.view(-1).tolist()[:10]}")
        images = np.zeros((len(items), 28, 28), np.uint8)
        found = torch.ones(len(items), dtype=torch.bool)
        for i, o in enumerate(items):
            # rows as the loaders serve them (fastai's interpretation passes them back) are MNIST's already
            a = _as_image(o) if not prepare or _is_row(o) else prepare_digit(o)
            if a is None: found[i] = False
            else: images[i] = a
        dev = self.valid.dataset.x.device
        x = _images_to_x(torch.from_numpy(images), dev)
        ds = DigitTensors(x, None if ys is None else ys.to(dev), self.vocab)
        dl = self.valid.new(ds, shuffle=False, drop_last=False, **kwargs)
        dl.found = found
        return dl


def _check_prepare(prepare) -> bool:
    "`prepare` if it is a bool, or a clear error"
    if not isinstance(prepare, (bool, np.bool_)):
        raise TypeError(f"`prepare` must be True (make images look like MNIST's with `prepare_digit`) or False (images "
                        f"are already 28x28 light-on-dark digits), got {prepare!r}")
    return bool(prepare)


def _pair_tensors(digits:dict, pair) -> tuple:
    "`(images, labels, indices)` of both digits, `pair[0]` first: labels float32 (n, 1), 0 for `pair[0]`"
    parts = [digits[d][0] for d in pair]
    images = torch.cat(parts, out=_cpu_empty((sum(map(len, parts)), *parts[0].shape[1:]), parts[0].dtype)
                       if all(p.device.type == 'cpu' for p in parts) else None)
    indices = torch.cat([digits[d][1] for d in pair])
    labels = torch.cat([torch.full((len(digits[d][0]), 1), float(i)) for i, d in enumerate(pair)])
    return images, labels, indices

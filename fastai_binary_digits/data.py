"`BinaryDigitsDataLoaders`: two MNIST digits as whole tensors, served to fastai by slicing"
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from fastcore.meta import delegates
from fastai.data.core import DataLoaders
from fastai.data.transforms import CategoryMap

from .checks import BinaryDigitsError, check_bs, check_device, check_pair, check_prepare
from .fastai_internals import BinaryDigitsDL, DigitsDataset, TensorDigits
from .mnist import find_source, load_source
from .prepare import digit_images

__all__ = ['BinaryDigitsDataLoaders', 'BinaryDigitsDL', 'DigitsDataset', 'TensorDigits', 'BinaryDigitsError',
           'check_pair', 'check_device']


def images_to_x(images:Tensor, device=None) -> Tensor:
    "uint8 images (n, 28, 28) as the loaders serve them: float32 (n, 784) in 0..1, on `device`"
    flat = images.flatten(1)
    if flat.device.type != 'cpu' or (device is not None and torch.device(device).type != 'cpu'):
        return flat.to(device).float().div_(255)
    # numpy asks the OS for huge pages for large arrays: a fresh tensor's page faults would cost more than the copy
    return torch.from_numpy(np.empty(flat.shape, np.float32)).copy_(flat).div_(255)


def pair_tensors(digits:dict, pair) -> tuple:
    "`(images, labels, indices)` of both digits of `pair` (`load_source`'s `digits`), `pair[0]` first, labelled 0"
    images = torch.cat([digits[d][0] for d in pair])
    labels = torch.cat([torch.full((len(digits[d][0]), 1), float(i)) for i, d in enumerate(pair)])
    return images, labels, torch.cat([digits[d][1] for d in pair])


def split_indices(n:int, valid_pct:float, seed:int|None=None) -> tuple:
    "The sorted validation and training indices of a random split holding out `int(valid_pct*n)` of `n` images"
    g = torch.Generator()
    if seed is None: g.seed()
    else: g.manual_seed(seed)
    perm, cut = torch.randperm(n, generator=g), int(valid_pct*n)
    return perm[:cut].sort().values, perm[cut:].sort().values


def _load_pair(source:tuple, pair, split:str, cache:bool=True) -> tuple:
    "`pair_tensors` of `split` from `source`, or a clear error when a digit has no images there"
    digits = load_source(source, pair, split, cache)
    for d in pair:
        if not len(digits[d][0]): raise BinaryDigitsError(f"{source[1]} holds no {split} images of the digit {d}: "
                                                          "choose a pair of digits that it holds")
    return pair_tensors(digits, pair)


def _dataset(tensors:tuple, vocab, device) -> DigitsDataset:
    images, labels, indices = tensors
    return DigitsDataset(images_to_x(images, device), labels.to(device), vocab, indices)


def testing_dl(pair, path:str|Path|None=None, sample:bool=False, bs:int=256, device=None) -> BinaryDigitsDL:
    "A loader of the official testing images of `pair`, in order (label 0 for `pair[0]`): no training image is read"
    pair, device = check_pair(pair), check_device(device)
    tensors = _load_pair(find_source(path, sample), pair, 'testing')
    vocab = CategoryMap(list(pair), sort=False)
    return BinaryDigitsDL(_dataset(tensors, vocab, device), bs=check_bs(bs), device=device)


def _check_split(valid:str, valid_pct):
    if valid not in ('split', 'testing'): raise BinaryDigitsError(
        f"`valid` must be 'split' (hold out `valid_pct` of training) or 'testing', got {valid!r}")
    if valid == 'split' and not (isinstance(valid_pct, (int, float)) and 0 < valid_pct < 1): raise BinaryDigitsError(
        f"`valid_pct` must be a fraction between 0 and 1 (exclusive), such as 0.2, got {valid_pct!r}")


class BinaryDigitsDataLoaders(DataLoaders):
    "fastai `DataLoaders` for a pair of MNIST digits: label 0 for `pair[0]`, label 1 for `pair[1]`, as in the book"
    prepare = True     # whether `test_dl` makes a person's images look like MNIST's (exported learners of old: yes)
    pair_check = None  # a `PairCheck` (`learn.fit_pair_check()`): `test_dl` says which images are not of the pair
    mnist_args = None  # how `from_mnist` made them: the source and split the pair check loads the other digits with

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
        pair, prepare, bs, device = check_pair(pair), check_prepare(prepare), check_bs(bs), check_device(device)
        _check_split(valid, valid_pct)
        source = find_source(path, sample)
        train = _load_pair(source, pair, 'training', cache)
        if valid == 'testing': valid_set = _load_pair(source, pair, 'testing', cache)
        else:
            vi, ti = split_indices(len(train[0]), valid_pct, seed)
            if not len(vi): raise BinaryDigitsError(
                f"`valid_pct` {valid_pct} holds out no image of the {len(ti):,} training images of {pair} "
                f"(int({valid_pct} * {len(ti):,}) is 0): give at least 1/{len(ti):,}, such as 0.2")
            valid_set, train = [t.index_select(0, vi) for t in train], [t.index_select(0, ti) for t in train]
        vocab = CategoryMap(list(pair), sort=False)
        trn = BinaryDigitsDL(_dataset(train, vocab, device), bs=bs, shuffle=True, device=device, **kwargs)
        val = BinaryDigitsDL(_dataset(valid_set, vocab, device), bs=bs, shuffle=False, device=device, **kwargs)
        # fastai saves models under `dls.path`: the data's folder, as for `untar_data` users; never inside the package
        dls = cls(trn, val, path='.' if sample else source[1], device=device)
        dls.prepare, dls.mnist_args = prepare, dict(source=source, valid=valid, valid_pct=valid_pct, seed=seed)
        return dls

    def new_empty(self):
        "fastai's `new_empty` (what `learn.export()` saves), keeping `prepare` and the pair check"
        res = super().new_empty()
        res.prepare, res.pair_check = self.prepare, self.pair_check
        return res

    def test_dl(self, test_items, rm_type_tfms=None, with_labels:bool=False, prepare:bool|None=None,
                **kwargs) -> BinaryDigitsDL:
        """A loader of `test_items` (files, PIL images, arrays, tensors; `(image, label)` if `with_labels`), prepared by
        `prepare_digit` when `prepare` (None: `self.prepare`), else resized. Its `found`, `digits` (how many side by
        side), `in_pair` (the pair check's verdict) and `other_probs` (its probability of another digit, or NaN) say
        what each image held; images without a digit are served blank"""
        kwargs.pop('process', None)  # passed by fastai's `Interpretation`; there is nothing to process here
        prepare = check_prepare(self.prepare if prepare is None else prepare)
        items = list(test_items)
        if not items: raise BinaryDigitsError("`test_items` is empty: give at least one image")
        ys = None
        if with_labels:
            items, ys = zip(*items)
            ys = torch.tensor([float(y) for y in ys]).view(-1, 1)
            if not ((ys == 0) | (ys == 1)).all():
                raise BinaryDigitsError(f"Labels given with `with_labels=True` must be 0 or 1 (0 for {self.vocab[0]}, "
                                        f"1 for {self.vocab[1]}), got {ys.view(-1).tolist()[:10]}")
        images, digits = digit_images(items, prepare, counts=True)
        dev = self.valid.dataset.x.device
        ds = DigitsDataset(images_to_x(torch.from_numpy(images), dev), None if ys is None else ys.to(dev), self.vocab)
        dl = self.valid.new(ds, shuffle=False, drop_last=False, **kwargs)
        dl.digits = torch.from_numpy(digits)
        dl.found = dl.digits > 0
        dl.in_pair, dl.other_probs = dl.found.clone(), torch.full((len(digits),), float('nan'))
        if self.pair_check is not None:
            in_pair, probs = self.pair_check.in_pair(ds.x)
            dl.in_pair &= in_pair.cpu()
            dl.other_probs = torch.where(dl.found, probs.cpu(), dl.other_probs)
        return dl

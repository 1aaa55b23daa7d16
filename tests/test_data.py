"The data layer: the bundled sample, mnist_png through untar_data, IDX folders, the cache, the loaders, bad input"
import gzip, hashlib, os, random, shutil, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastai.data.core import DataLoaders
from fastai.torch_core import default_device
from fastai_binary_digits import BinaryDigitsDataLoaders, BinaryDigitsDL
from fastai_binary_digits.build_sample import build_sample
from fastai_binary_digits.mnist import SAMPLE_PATH, load_digits, read_idx


# ---------------------------------------------------------------------------------------------------------------
# The bundled sample

def test_sample_is_small_and_holds_every_digit_of_both_splits():
    size = sum(f.stat().st_size for f in SAMPLE_PATH.iterdir())
    assert size <= 4*1024*1024, f"the bundled sample is {size:,} bytes"
    for split, least in (('training', 1000), ('testing', 200)):
        got = load_digits(range(10), split, sample=True)
        for d, (images, indices) in got.items():
            assert len(images) >= least and images.shape[1:] == (28, 28) and images.dtype == torch.uint8
            assert len(set(indices.tolist())) == len(indices)  # each image keeps its own index in the original file
            assert images.float().mean() > 10                  # real digits, not blank images


def test_sample_images_are_the_originals_at_their_indices(idx_dir):
    for split, prefix in (('training', 'train'), ('testing', 't10k')):
        full_images = read_idx(idx_dir/f'{prefix}-images-idx3-ubyte.gz')
        full_labels = read_idx(idx_dir/f'{prefix}-labels-idx1-ubyte.gz')
        for d, (images, indices) in load_digits(range(10), split, sample=True).items():
            assert np.array_equal(full_images[indices.numpy()], images.numpy())
            assert (full_labels[indices.numpy()] == d).all()


def test_sample_build_is_deterministic_and_matches_the_bundled_files(idx_dir, tmp_path):
    a, b = build_sample(idx_dir, tmp_path/'a'), build_sample(idx_dir, tmp_path/'b')
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    for f in a: assert f.read_bytes() == (SAMPLE_PATH/f.name).read_bytes(), f"{f.name} differs from the bundled sample"


# ---------------------------------------------------------------------------------------------------------------
# from_mnist on the sample: items, labels, split, batches

def test_items_labels_and_vocab(sample_dls):
    dls = sample_dls
    assert isinstance(dls, DataLoaders) and list(dls.vocab) == [4, 8]
    x, y = dls.one_batch()
    assert x.shape == (256, 784) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (256, 1) and y.dtype == torch.float32 and set(y.view(-1).tolist()) <= {0.0, 1.0}
    assert dls.device == default_device() and x.device.type == default_device().type
    # label 0 is pair[0]: the training images labelled 0 are exactly the sample's 4s
    fours, _ = load_digits([4], 'training', sample=True)[4]
    ds = dls.train.dataset
    four_rows = {hashlib.md5((r*255).round().byte().numpy().tobytes()).hexdigest() for r in ds.x[ds.y.view(-1) == 0]}
    all_fours = {hashlib.md5(im.numpy().tobytes()).hexdigest() for im in fours}
    assert four_rows <= all_fours and len(four_rows) > 700


def test_pair_order_sets_the_labels():
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(8, 4), sample=True, seed=42)
    assert list(dls.vocab) == [8, 4]
    ref = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=42)
    # the same images, with the labels swapped
    n8 = int((dls.train.dataset.y == 0).sum() + (dls.valid.dataset.y == 0).sum())
    n8_ref = int((ref.train.dataset.y == 1).sum() + (ref.valid.dataset.y == 1).sum())
    assert n8 == n8_ref == 1000


def test_random_split_is_reproducible_and_disjoint():
    mk = lambda seed: BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True, seed=seed)
    a, b, c = mk(1), mk(1), mk(2)
    n = len(a.train.dataset) + len(a.valid.dataset)
    assert n == 2000 and len(a.valid.dataset) == int(0.2*n)
    key = lambda ds: set(zip(ds.indices.tolist(), ds.y.view(-1).tolist()))
    assert not key(a.train.dataset) & key(a.valid.dataset)
    assert key(a.valid.dataset) == key(b.valid.dataset) and key(a.valid.dataset) != key(c.valid.dataset)
    assert torch.equal(a.valid.dataset.x, b.valid.dataset.x)


def test_valid_pct_sets_the_size():
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(0, 1), sample=True, valid_pct=0.25, seed=0)
    assert len(dls.valid.dataset) == 500 and len(dls.train.dataset) == 1500


def test_official_testing_set_as_validation():
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, valid='testing')
    assert len(dls.train.dataset) == 2000 and len(dls.valid.dataset) == 400
    testing = load_digits((4, 8), 'testing', sample=True)
    assert torch.equal(dls.valid.dataset.indices, torch.cat([testing[4][1], testing[8][1]]))


def test_batches_shuffle_each_epoch_and_validation_stays_in_order(sample_dls):
    trn, val = sample_dls.train, sample_dls.valid
    assert trn.bs == 256 and len(trn) == int(np.ceil(1600/256)) and len(val) == 2
    epoch = lambda dl: torch.cat([xb for xb, yb in dl])
    e1, e2 = epoch(trn), epoch(trn)
    assert len(e1) == 1600 and not torch.equal(e1, e2)
    rows = lambda x: sorted(map(bytes, (x*255).round().byte().numpy()))
    assert rows(e1) == rows(e2) == rows(trn.dataset.x)  # each image exactly once per epoch
    assert torch.equal(epoch(val), val.dataset.x) and torch.equal(epoch(val), epoch(val))


def test_bs_and_drop_last():
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(1, 7), sample=True, seed=0, bs=300, drop_last=True)
    assert [len(xb) for xb, _ in dls.train] == [300]*5
    assert [len(xb) for xb, _ in dls.valid] == [300]*1   # drop_last applies to both, as fastai's `drop_last` kwarg


def test_new_len_and_new_empty(sample_dls):
    dl = sample_dls.valid.new(bs=64)
    assert isinstance(dl, BinaryDigitsDL) and dl.bs == 64 and len(dl) == 7
    assert dl.one_batch()[0].shape == (64, 784)
    empty = sample_dls.new_empty()
    assert len(empty.train.dataset) == 0 and list(empty.vocab) == [4, 8]
    assert empty.train.dataset.x.untyped_storage().nbytes() == 0  # a view would pickle the whole storage


def test_show_batch_draws_digits_with_their_labels(sample_dls):
    import matplotlib; matplotlib.use('Agg')
    fig = sample_dls.show_batch(max_n=6)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6 and set(titles) <= {'4', '8'}
    assert all(ax.images[0].get_array().shape == (28, 28) for ax in fig.axes if ax.images)


def test_test_dl_takes_paths_pil_arrays_and_tensors(sample_dls, sample_png, tmp_path):
    fn = sorted((sample_png/'testing'/'8').iterdir())[0]
    im = Image.open(fn)
    rgb_big = im.convert('RGB').resize((56, 56)); rgb_big.save(tmp_path/'big_rgb.png')
    items = [fn, str(fn), im, np.asarray(im), torch.tensor(np.asarray(im)), tmp_path/'big_rgb.png',
             np.asarray(im).astype(np.float32)/255]
    dl = sample_dls.test_dl(items)
    (x,) = dl.one_batch()
    assert x.shape == (len(items), 784)
    ref = torch.tensor(np.asarray(im), dtype=torch.float32).view(-1)/255
    for row in x[:5]: assert torch.allclose(row, ref)
    assert torch.allclose(x[6], ref, atol=1e-6)
    assert (x[5] - ref).abs().mean() < 0.05  # RGB 56x56 converted back to 28x28 greyscale


def test_test_dl_bad_items(sample_dls, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): sample_dls.test_dl([tmp_path/'nope.png'])
    with pytest.raises(TypeError, match='Cannot make an image'): sample_dls.test_dl([{'a': 1}])
    with pytest.raises(ValueError, match='empty'): sample_dls.test_dl([])


# ---------------------------------------------------------------------------------------------------------------
# fastai's mnist_png through untar_data, IDX folders, the cache

def _copy_png(sample_png, dest):
    "A private copy of the staged PNG tree (without any cache), for tests that load, cache or break it"
    return shutil.copytree(sample_png, dest, ignore=shutil.ignore_patterns('.fastai_binary_digits'))


def test_untar_data_layout_with_fastai_home_and_no_network(fastai_home, sample_png, monkeypatch):
    _copy_png(sample_png, fastai_home/'data'/'mnist_png')
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), seed=42)
    assert Path(dls.path) == fastai_home/'data'/'mnist_png'
    ref = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=42)
    assert torch.equal(dls.train.dataset.x, ref.train.dataset.x) and torch.equal(dls.valid.dataset.y, ref.valid.dataset.y)


def test_offline_without_data_names_the_ways_out(fastai_home):
    with pytest.raises(ConnectionError, match=r'sample=True.*path='):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8))


def test_path_to_mnist_png_and_to_idx_files(sample_png, tmp_path):
    sample_png = _copy_png(sample_png, tmp_path/'mnist_png')
    ref = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, valid='testing')
    png = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=sample_png, valid='testing')
    assert torch.equal(png.train.dataset.x, ref.train.dataset.x) and torch.equal(png.valid.dataset.x, ref.valid.dataset.x)
    # plain (uncompressed) IDX files, in torchvision's MNIST/raw layout
    raw = tmp_path/'MNIST'/'raw'; raw.mkdir(parents=True)
    for f in SAMPLE_PATH.glob('*.gz'): (raw/f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    idx = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=tmp_path, valid='testing')
    assert torch.equal(idx.train.dataset.x, ref.train.dataset.x)


def _cache_files(root): return sorted((Path(root)/'.fastai_binary_digits').glob('*.pt'))


def test_cache_is_written_once_then_used(sample_png, tmp_path, monkeypatch):
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    first = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, seed=0)
    assert [f.name for f in _cache_files(root)] == ['training-4.pt', 'training-8.pt']
    assert not list((root/'.fastai_binary_digits').glob('*.tmp'))  # written atomically: nothing left half-written
    import fastai_binary_digits.mnist as m
    def _no_decoding(*a, **k): raise AssertionError("decoded although the cache is valid")
    monkeypatch.setattr(m, '_decode_folder', _no_decoding)
    again = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, seed=0)
    assert torch.equal(first.train.dataset.x, again.train.dataset.x)


def test_cache_rebuilt_when_the_source_changes(sample_png, tmp_path):
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    n = len(BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, valid='testing').train.dataset)
    victim = sorted((root/'training'/'4').iterdir())[0]
    victim.unlink()
    assert len(BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, valid='testing').train.dataset) == n-1
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(root/'training'/'4'/'99999.png')
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, valid='testing')
    assert len(dls.train.dataset) == n and (dls.train.dataset.x == 1).all(1).sum() == 1


def test_unreadable_cache_is_rebuilt_with_a_warning(sample_png, tmp_path):
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    ref = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, seed=0)
    for f in _cache_files(root): f.write_bytes(b'not a cache')
    with pytest.warns(UserWarning, match='unreadable'):
        dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, seed=0)
    assert torch.equal(dls.train.dataset.x, ref.train.dataset.x)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # rebuilt: no warning the next time
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, seed=0)


def test_cache_failure_never_stops_a_load(sample_png, tmp_path):
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    (root/'.fastai_binary_digits').write_text('a file where the cache folder would go')
    with pytest.warns(UserWarning, match='Could not write the image cache'):
        dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root, seed=0)
    assert len(dls.train.dataset) == 1600
    assert (root/'.fastai_binary_digits').read_text().startswith('a file')


# ---------------------------------------------------------------------------------------------------------------
# Bad input: each a clear error that says what was wrong and what to do

@pytest.mark.parametrize('pair', [(3, 3), (3,), (3, 10), (-1, 2), 'ab', (1, 2, 3), None, (2.5, 3)])
def test_bad_pair(pair):
    with pytest.raises(ValueError, match=r'`pair` must be two distinct digits 0-9'):
        BinaryDigitsDataLoaders.from_mnist(pair=pair, sample=True)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=tmp_path/'nowhere')


def test_path_without_a_known_layout(tmp_path):
    (tmp_path/'some.txt').write_text('hello')
    with pytest.raises(FileNotFoundError, match=r"holds no MNIST data.*mnist_png.*IDX"):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=tmp_path)


def test_missing_digit_folder(sample_png):
    with pytest.raises(FileNotFoundError, match=r'no folder training/3'):
        BinaryDigitsDataLoaders.from_mnist(pair=(3, 4), path=sample_png)


def test_corrupt_image_is_named(sample_png, tmp_path):
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    bad = root/'training'/'8'/'123456.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    with pytest.raises(ValueError, match=r'123456\.png.*corrupt'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root)


def test_image_that_is_not_28x28(sample_png, tmp_path):
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    Image.new('L', (32, 32)).save(root/'training'/'4'/'777777.png')
    with pytest.raises(ValueError, match=r'777777\.png is 32x32.*28x28'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=root)


def test_corrupt_idx_file(tmp_path):
    for f in SAMPLE_PATH.glob('*.gz'): shutil.copy(f, tmp_path)
    data = gzip.decompress((tmp_path/'train-images-idx3-ubyte.gz').read_bytes())
    (tmp_path/'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(ValueError, match=r'truncated or corrupt'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=tmp_path)
    (tmp_path/'train-images-idx3-ubyte.gz').write_bytes(b'not gzip at all')
    with pytest.raises(ValueError, match=r'Could not read the IDX file'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=tmp_path)
    # a header whose sizes multiply past 64 bits (to 0 in int64 arithmetic) is refused in the package's words
    (tmp_path/'huge-idx3-ubyte').write_bytes(bytes([0, 0, 8, 4]) + (65536).to_bytes(4, 'big')*4)
    with pytest.raises(ValueError, match=r'truncated or corrupt: its header declares shape \(65536, 65536'):
        read_idx(tmp_path/'huge-idx3-ubyte')


def test_png_names_that_are_not_indices(sample_png, tmp_path):
    "Images named by other than their index (even by Unicode digits such as '²') load, after the indexed ones"
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    one = sorted((root/'training'/'4').glob('*.png'))[0]
    shutil.copy(one, root/'training'/'4'/'².png')
    shutil.copy(one, root/'training'/'4'/'extra.png')
    digits = load_digits([4], path=root, cache=False)
    assert digits[4][1][-2:].tolist() == [-1, -1] and len(digits[4][0]) == len(list((root/'training'/'4').iterdir()))


@pytest.mark.parametrize('valid_pct', [0, 1, 1.5, -0.1, '0.2', None])
def test_bad_valid_pct(valid_pct):
    with pytest.raises(ValueError, match=r'`valid_pct` must be a fraction between 0 and 1'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, valid_pct=valid_pct)


def test_bad_valid():
    with pytest.raises(ValueError, match=r"`valid` must be 'split'.*or 'testing'"):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, valid='test')


@pytest.mark.parametrize('bs', [0, -5, 2.5, True])
def test_bad_bs(bs):
    with pytest.raises(ValueError, match=r'`bs` must be a whole number of at least 1'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, bs=bs)


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU: the missing-device error cannot happen')
def test_device_that_is_not_there():
    with pytest.raises(ValueError, match=r'asked for a GPU.*device=.cpu.'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, device='cuda')
    with pytest.raises(ValueError, match=r'not a device name'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, device='gpu-please')


def test_sample_and_path_together(tmp_path):
    with pytest.raises(ValueError, match='either `sample=True` or `path=`'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, path=tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU to check placement on it')
def test_gpu_placement():
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, device='cuda')
    x, y = dls.one_batch()
    assert x.is_cuda and y.is_cuda and dls.train.dataset.x.is_cuda


# ---------------------------------------------------------------------------------------------------------------
# The full set (CI passes its location in MNIST_IDX_DIR)

def test_full_counts_from_idx_files(idx_dir):
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=idx_dir, seed=0)
    y = torch.cat([dls.train.dataset.y, dls.valid.dataset.y]).view(-1)
    assert int((y == 0).sum()) == 5842 and int((y == 1).sum()) == 5851
    assert len(dls.valid.dataset) == 2338 and len(dls.train.dataset) == 11693 - 2338


def test_full_mnist_png_through_untar_data(full_png_home, idx_dir, fastai_home, monkeypatch):
    monkeypatch.setenv('FASTAI_HOME', str(full_png_home))
    png = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), seed=0)
    idx = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=idx_dir, seed=0)
    assert len(png.train.dataset) + len(png.valid.dataset) == 11693
    assert torch.equal(png.train.dataset.x, idx.train.dataset.x) and torch.equal(png.valid.dataset.indices, idx.valid.dataset.indices)
    testing = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), valid='testing')
    assert len(testing.valid.dataset) == 982 + 974


# ---------------------------------------------------------------------------------------------------------------
# What a new user hit in the data layer

def test_home_folder_is_expanded_in_every_path_argument(sample_png, tmp_path, monkeypatch):
    "`~` as the README writes it: `write_mnist_png('~/...')` stages under $HOME (not a folder named `~`), and finds it"
    from fastai_binary_digits import binary_learner
    from fastai_binary_digits.mnist import write_mnist_png
    home, cwd = tmp_path/'home', tmp_path/'cwd'
    cwd.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.chdir(cwd)
    raw = home/'mnist'; raw.mkdir(parents=True)
    for f in SAMPLE_PATH.glob('*.gz'): shutil.copy(f, raw/f.name)
    out = write_mnist_png('~/.fastai/data/mnist_png', path='~/mnist', digits=(4, 8))
    assert not (cwd/'~').exists() and Path(out) == home/'.fastai'/'data'/'mnist_png'
    assert len(list((home/'.fastai'/'data'/'mnist_png'/'testing'/'8').glob('*.png'))) == 200
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path='~/.fastai/data/mnist_png', valid='testing')
    ref = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, valid='testing')
    assert torch.equal(dls.valid.dataset.x, ref.valid.dataset.x)
    assert read_idx('~/mnist/t10k-labels-idx1-ubyte.gz').shape == (2000,)
    assert len(load_digits((4,), 'testing', path='~/mnist')[4][0]) == 200
    assert build_sample('~/mnist', out='~/sample', per_digit={'training': 1, 'testing': 1})[0].parent == home/'sample'
    fn = next((home/'.fastai'/'data'/'mnist_png'/'testing'/'4').glob('*.png'))
    x = dls.test_dl([f'~/.fastai/data/mnist_png/testing/4/{fn.name}']).dataset.x  # an image given as `~/...`
    assert x.shape == (1, 784) and x.sum() > 10
    learn = binary_learner(dls, seed=0)
    learn.export('~/four_or_eight.pkl')
    assert (home/'four_or_eight.pkl').stat().st_size > 1000 and not (cwd/'~').exists()


def test_cache_sees_an_image_overwritten_in_place(sample_png, tmp_path):
    "Same name, new content (the folder's own time and names do not change): the cache is rebuilt, not served stale"
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    first = load_digits((4,), 'testing', path=root)[4]
    folder = root/'testing'/'4'
    names = sorted(folder.iterdir(), key=lambda p: int(p.stem))
    folder_time = folder.stat().st_mtime_ns
    shutil.copyfile(names[1], names[0])  # the first 4 overwritten in place by the second one
    assert folder.stat().st_mtime_ns == folder_time
    images, indices = load_digits((4,), 'testing', path=root)[4]
    assert torch.equal(indices, first[1]) and torch.equal(images[0], first[0][1]) and torch.equal(images[1:], first[0][1:])
    import fastai_binary_digits.mnist as m
    entries, fingerprint = m._list_folder(folder)
    os_time = names[0].stat()
    os.utime(names[0], ns=(os_time.st_atime_ns, os_time.st_mtime_ns + 1))  # touched: same size, new time
    assert m._list_folder(folder)[1] != fingerprint


@pytest.mark.parametrize('damage', ['garbage', 'truncated'])
def test_unreadable_cache_warns_in_one_line(damage, sample_png, tmp_path):
    "Which file, and that it is rebuilt; not PyTorch's advice to load it with `weights_only=False`"
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    ref = load_digits((4,), 'testing', path=root)[4][0]
    fn = root/'.fastai_binary_digits'/'testing-4.pt'
    fn.write_bytes(b'not a cache' if damage == 'garbage' else fn.read_bytes()[:5000])
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        got = load_digits((4,), 'testing', path=root)[4][0]
    assert torch.equal(got, ref)
    assert len(ws) == 1, [str(w.message) for w in ws]
    msg = str(ws[0].message)
    assert '\n' not in msg and str(fn) in msg and 'rebuild' in msg and 'weights_only' not in msg, msg
    assert len(msg.replace(str(fn), '')) < 120, msg  # short, whatever the length of the (temporary) path


def test_a_flipped_byte_in_the_cache_is_rebuilt_not_served(sample_png, tmp_path):
    "`torch.load` does not check its zip's CRCs: the cache's own checksum finds the byte and the cache is rebuilt"
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    ref = load_digits((4,), 'testing', path=root)[4][0]
    fn = root/'.fastai_binary_digits'/'testing-4.pt'
    good = fn.read_bytes()
    at = good.index(ref.numpy().tobytes()[len(ref)//2*784:][:784])  # the middle image's pixels, in the file
    fn.write_bytes(good[:at+400] + bytes([good[at+400] ^ 0x10]) + good[at+401:])
    with pytest.warns(UserWarning, match=r"The image cache .*testing-4.pt is damaged: its checksum does not match; "
                                         r"decoding the images again and rebuilding it"):
        assert torch.equal(load_digits((4,), 'testing', path=root)[4][0], ref)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # rebuilt: read without a word the next time
        assert torch.equal(load_digits((4,), 'testing', path=root)[4][0], ref)
    r = random.Random(21)  # and a byte flipped anywhere: never served
    for i in r.sample(range(len(good)), 12):
        fn.write_bytes(good[:i] + bytes([good[i] ^ (1 << r.randrange(8))]) + good[i+1:])
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            assert torch.equal(load_digits((4,), 'testing', path=root)[4][0], ref), i


def test_temporary_files_left_by_a_killed_write_are_removed(sample_png, tmp_path):
    "A process killed while writing the cache leaves its temporary file: removed once old enough to be no one's"
    root = _copy_png(sample_png, tmp_path/'mnist_png')
    load_digits((4,), 'testing', path=root)
    cache = root/'.fastai_binary_digits'
    old, young = cache/'.testing-4.pt.k1ll3d.tmp', cache/'.testing-4.pt.wr1t1ng.tmp'
    for f in (old, young): f.write_bytes(b'half a cache')
    os.utime(old, (time.time() - 3600,)*2)
    load_digits((4,), 'testing', path=root)
    assert not old.exists() and young.exists()


@pytest.mark.parametrize('pair, message', [
    ('37', r"a string, not two numbers; write \(3, 7\)"),
    (b'37', r"a string, not two numbers"),
    ((True, False), r"True and False are not digits"),
    ((np.bool_(True), 3), r"True and False are not digits"),
])
def test_pair_refuses_strings_and_booleans(pair, message):
    from fastai_binary_digits import check_pair
    with pytest.raises(ValueError, match=r"`pair` must be two distinct digits 0-9.*" + message):
        check_pair(pair)
    with pytest.raises(ValueError, match=message):
        BinaryDigitsDataLoaders.from_mnist(pair=pair, sample=True)
    assert check_pair((np.int64(3), 7.0)) == (3, 7) and check_pair([0, 1]) == (0, 1)  # numbers of any kind still do


@pytest.mark.parametrize('valid_pct', [1e-4, 1/2001])
def test_valid_pct_that_holds_out_no_image(valid_pct):
    "2,000 training images of 3 and 7 in the sample: int(valid_pct * 2000) == 0 would validate on nothing"
    with pytest.raises(ValueError, match=rf"`valid_pct` {valid_pct} holds out no image of the 2,000 training images "
                                         r"of \(3, 7\).*at least 1/2,000"):
        BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True, valid_pct=valid_pct)
    assert len(BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True, valid_pct=1/2000).valid.dataset) == 1


def _write_idx(fn, arr):
    code = {np.dtype('uint8'): 0x08}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + b''.join(int(n).to_bytes(4, 'big') for n in arr.shape)
    fn.write_bytes(header + arr.tobytes())


@pytest.mark.parametrize('split', ['training', 'testing'])
def test_a_split_without_images_of_a_digit(split, tmp_path):
    "IDX files (here the sample's) in which one split lacks the digit 9: a clear error, not a loader of nothing"
    for prefix in ('train', 't10k'):
        images = read_idx(SAMPLE_PATH/f'{prefix}-images-idx3-ubyte.gz')
        labels = read_idx(SAMPLE_PATH/f'{prefix}-labels-idx1-ubyte.gz')
        keep = labels != 9 if prefix == {'training': 'train', 'testing': 't10k'}[split] else slice(None)
        _write_idx(tmp_path/f'{prefix}-images-idx3-ubyte', images[keep])
        _write_idx(tmp_path/f'{prefix}-labels-idx1-ubyte', labels[keep])
    with pytest.raises(ValueError, match=rf"holds no {split} images of the digit 9: choose a pair"):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 9), path=tmp_path, valid='testing')
    assert len(BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=tmp_path, valid='testing').valid.dataset) == 400


def test_top_losses_titles_show_digit_prediction_and_its_probability(sample_dls):
    "Each title: the actual digit, the prediction and the probability of the predicted digit (not the loss beside it)"
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from fastai.interpret import ClassificationInterpretation
    from fastai_binary_digits import binary_learner
    learn = binary_learner(sample_dls, seed=0)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    interp = ClassificationInterpretation.from_learner(learn)
    top, idxs = interp.top_losses(6)
    with learn.no_bar(): interp.plot_top_losses(6)
    fig = plt.gcf()
    assert fig._suptitle.get_text() == 'Actual/Prediction/Probability of the prediction'
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    probs, targs = learn.get_preds(dl=sample_dls.valid)  # the probability of pair[1] = 8
    for title, i in zip(titles, idxs.tolist(), strict=True):
        actual, pred, prob = title.split('/')
        p8 = probs[i, 0].item()
        assert int(actual) == (8 if targs[i, 0] else 4) and int(pred) == (8 if p8 > 0.5 else 4)
        assert float(prob) == pytest.approx(max(p8, 1-p8), abs=0.006) and float(prob) >= 0.5
    plt.close('all')

"Where the digits come from: fastai's `mnist_png` folders, the original IDX files, or the bundled sample."
import gzip, hashlib, math, os, warnings
from array import array
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checks import BinaryDigitsError
from .files import atomic_path, open_regular, remove_stale_temporaries

__all__ = ['read_idx', 'load_digits', 'write_mnist_png', 'SAMPLE_PATH']

SAMPLE_PATH = Path(__file__).parent/'sample_data'  # the bundled sample: IDX files holding a subset of MNIST
SPLITS = {'training': 'train', 'testing': 't10k'}   # fastai's folder name -> the IDX files' prefix
_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}
_IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')
_CACHE_DIR = '.fastai_binary_digits'  # made beside the digit folders of an `mnist_png` tree
_CACHE_FORMAT = 3                     # bump when the cache's content or its fingerprint changes

# IDX files, as on the MNIST home page and in torchvision's `MNIST/raw`

def read_idx(path:str|Path) -> np.ndarray:
    "Read an IDX file, plain or gzip-compressed, into a numpy array of its declared type and shape"
    path = Path(path).expanduser()
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f: data = f.read()
    except (OSError, EOFError) as e: raise BinaryDigitsError(f"Could not read the IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise BinaryDigitsError(f"{path} is not an IDX file (its first bytes are {data[:4]!r}, expected 0, 0, a type "
                                "code and the number of dimensions)")
    ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    shape = tuple(int.from_bytes(data[4+4*i:8+4*i], 'big') for i in range(ndim))
    expected = 4 + 4*ndim + math.prod(shape)*dtype.itemsize  # (np.prod would overflow)
    if len(data) != expected:
        raise BinaryDigitsError(f"{path} is truncated or corrupt: its header declares shape {shape} ({expected:,} "
                                f"bytes) but the file holds {len(data):,} bytes")
    return np.frombuffer(data, dtype, offset=4+4*ndim).reshape(shape).astype(dtype.newbyteorder('='))

def idx_file(folder:Path, prefix:str, kind:str) -> Path|None:
    "The IDX file for `prefix` ('train' or 't10k') and `kind` ('images', 'labels', 'indices'), plain or .gz"
    return min(folder.glob(f'{prefix}-{kind}[-.]idx*'), default=None)  # the first by name: a plain file before its .gz

def _load_idx_split(folder:Path, split:str, digits) -> dict:
    prefix = SPLITS[split]
    images_f, labels_f = idx_file(folder, prefix, 'images'), idx_file(folder, prefix, 'labels')
    if images_f is None or labels_f is None:
        raise FileNotFoundError(f"{folder} has no {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] "
                                f"for the {split} split")
    images, labels = read_idx(images_f), read_idx(labels_f)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise BinaryDigitsError(f"{images_f} holds images of shape {images.shape[1:]} and type {images.dtype}; "
                                "MNIST images are 28x28 uint8")
    if labels.shape != images.shape[:1]:
        raise BinaryDigitsError(f"{labels_f} holds {len(labels):,} labels for the {len(images):,} images of {images_f}")
    indices_f = idx_file(folder, prefix, 'indices')  # the bundled sample keeps each image's index in the full file
    indices = read_idx(indices_f).astype(np.int64) if indices_f is not None else np.arange(len(images))
    return {d: (torch.from_numpy(images[labels == d]), torch.from_numpy(indices[labels == d])) for d in digits}

# fastai's `mnist_png`: `training/<digit>/<index>.png`, `testing/<digit>/<index>.png`

def _decode_image(fn:str) -> np.ndarray:
    "The 28x28 greyscale image in file `fn`, its size checked before it is decoded"
    with open_regular(fn, 'image file') as f:
        try:
            with Image.open(f) as im:
                if im.size == (28, 28): return np.asarray(im if im.mode == 'L' else im.convert('L'))
                size = im.size
        except Exception as e:  # PIL's decoders raise many kinds of errors on damaged files
            raise BinaryDigitsError(f"Could not decode the image {fn} ({e}); the file is corrupt or not an image: "
                                    "replace or remove it") from e
    raise BinaryDigitsError(f"{fn} is {size[0]}x{size[1]}; MNIST images are 28x28. Remove it, or resize it to 28x28 "
                            "greyscale")

def _index(name:str) -> int:
    "The image's index in the original MNIST file, from its name (`<index>.png`), or -1"
    stem = name.rsplit('.', 1)[0]
    return int(stem) if stem.isdecimal() and stem.isascii() else -1

def _list_folder(folder:Path):
    "`folder`'s entries, and a fingerprint of their names, sizes and times in listing order: any change decodes again"
    with os.scandir(folder) as it: stats = {e.name: e.stat() for e in it}
    h = hashlib.sha1('\0'.join(stats).encode())
    h.update(array('q', [v for st in stats.values() for v in (st.st_size, st.st_mtime_ns)]).tobytes())
    return list(stats), h.hexdigest()

def _decode_folder(folder:Path, names) -> torch.Tensor:
    "Decode the images `names` of `folder` into one uint8 tensor (n, 28, 28)"
    return torch.from_numpy(np.stack([_decode_image(os.path.join(folder, n)) for n in names]))

def _sha256(images:torch.Tensor, indices:torch.Tensor) -> str:
    "The checksum of a cache's tensors (`torch.load` does not check its zip's CRCs: a flipped byte would be served)"
    h = hashlib.sha256(images.contiguous().numpy())
    h.update(indices.contiguous().numpy())
    return h.hexdigest()

def _read_cache(fn:Path, fingerprint:str):
    "The cached `(images, indices)` if `fn` holds an intact cache of this `fingerprint`, else None"
    if not fn.is_file(): return None  # (never a FIFO: reading one would wait for a writer)
    try:
        c = torch.load(fn, weights_only=True)
        if c.get('format') != _CACHE_FORMAT or c.get('fingerprint') != fingerprint: return None  # stale: rebuilt
        images, indices = c['images'], c['indices']
        ok = (images.dtype == torch.uint8 and images.shape[1:] == (28, 28) and indices.dtype == torch.int64
              and indices.shape == images.shape[:1] and c.get('sha256') == _sha256(images, indices))
        if ok: return images, indices
        why = 'damaged: its checksum does not match'
    except Exception as e:  # PyTorch's own message is long, and its advice (`weights_only=False`) is wrong here
        why = f'unreadable ({type(e).__name__})'
    warnings.warn(f"The image cache {fn} is {why}; decoding the images again and rebuilding it", stacklevel=2)
    return None

def _load_png_digit(folder:Path, cache:bool=True):
    "`(images, indices)` of one digit folder, from the cache when it matches the folder, else decoded (and cached)"
    entries, fingerprint = _list_folder(folder)
    cache_fn = folder.parent.parent/_CACHE_DIR/f'{folder.parent.name}-{folder.name}.pt'
    if cache:
        remove_stale_temporaries(cache_fn)  # left by a process killed while writing the cache
        if (hit := _read_cache(cache_fn, fingerprint)) is not None: return hit
    names = sorted((n for n in entries if n.lower().endswith(_IMAGE_EXTS)), key=lambda n: (_index(n) < 0, _index(n), n))
    if not names: raise FileNotFoundError(f"{folder} holds no images; expected one PNG per MNIST image")
    images, indices = _decode_folder(folder, names), torch.tensor([_index(n) for n in names], dtype=torch.int64)
    if cache:
        try:
            cache_fn.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache_fn) as tmp:
                torch.save(dict(format=_CACHE_FORMAT, fingerprint=fingerprint, images=images, indices=indices,
                                sha256=_sha256(images, indices)), tmp)
        except Exception as e:
            warnings.warn(f"Could not write the image cache {cache_fn} ({e}); the images will be decoded again "
                          "next time")
    return images, indices

def _load_png_split(root:Path, split:str, digits, cache:bool=True) -> dict:
    for d in digits:
        if not (root/split/str(d)).is_dir():
            raise FileNotFoundError(f"{root} has no folder {split}/{d}: expected fastai's mnist_png layout, "
                                    f"{split}/<digit>/<index>.png")
    return {d: _load_png_digit(root/split/str(d), cache) for d in digits}

# Finding the data

def _fastai_mnist() -> Path:
    "fastai's `mnist_png`, from `FASTAI_HOME` when it is there, else downloaded by `untar_data`"
    from fastai.data.external import untar_data, URLs
    try: return untar_data(URLs.MNIST)
    except Exception as e:
        raise ConnectionError(f"Could not get fastai's MNIST with untar_data(URLs.MNIST) ({type(e).__name__}: {e}). "
                              "Offline? Use `sample=True` for the bundled sample, or `path=` a folder holding "
                              "mnist_png (training/ and testing/) or the four MNIST IDX files") from e

def find_source(path:str|Path|None=None, sample:bool=False):
    "('png'|'idx', folder) for the data the caller asked for: the bundled `sample`, a `path`, or fastai's MNIST"
    if sample:
        if path is not None: raise BinaryDigitsError("Give either `sample=True` or `path=`, not both")
        return 'idx', SAMPLE_PATH
    if path is None: path = _fastai_mnist()
    path = Path(path).expanduser()
    if not path.exists(): raise FileNotFoundError(f"`path` {path} does not exist; give a folder holding mnist_png "
                                                  "(training/ and testing/) or the four MNIST IDX files")
    for p in (path, path/'mnist_png'):  # fastai's `mnist_png` layout
        if (p/'training').is_dir() and (p/'testing').is_dir(): return 'png', p
    for p in (path, path/'raw', path/'MNIST'/'raw'):  # the IDX files, as they are or as torchvision keeps them
        if p.is_dir() and idx_file(p, 'train', 'images') and idx_file(p, 't10k', 'images'): return 'idx', p
    raise FileNotFoundError(f"{path} holds no MNIST data. Expected fastai's mnist_png layout (training/<digit>/*.png "
                            "and testing/<digit>/*.png) or the four IDX files (train-images-idx3-ubyte, "
                            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz)")

def load_digits(digits, split:str='training', path:str|Path|None=None, sample:bool=False, cache:bool=True) -> dict:
    "`{digit: (images, indices)}` for `digits` of `split` ('training' or 'testing'): uint8 (n, 28, 28) and int64 (n,)"
    return load_source(find_source(path, sample), digits, split, cache)

def load_source(source:tuple, digits, split:str='training', cache:bool=True) -> dict:
    "`load_digits` from a `source` found by `find_source`"
    if split not in SPLITS: raise BinaryDigitsError(f"`split` must be 'training' or 'testing', got {split!r}")
    kind, root = source
    return _load_png_split(root, split, digits, cache) if kind == 'png' else _load_idx_split(root, split, digits)

def write_mnist_png(dest:str|Path, path:str|Path|None=None, sample:bool=False, digits=range(10),
                    splits=tuple(SPLITS)) -> Path:
    "Write `digits` of a source (IDX files, `sample=True`...) as fastai's `mnist_png`: `dest/<split>/<digit>/<i>.png`"
    dest, source = Path(dest).expanduser(), find_source(path, sample)
    for split in splits:
        for d, (images, indices) in load_source(source, list(digits), split, cache=False).items():
            folder = dest/split/str(d)
            folder.mkdir(parents=True, exist_ok=True)
            for im, i in zip(images.numpy(), indices.tolist()): Image.fromarray(im).save(folder/f'{i}.png')
    return dest

"Any picture (a file, PIL image, array, tensor) as a PIL image: the one door in, its size bounded before decoding"
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .checks import BinaryDigitsError
from .files import open_regular

__all__ = ['as_pil_image']

MAX_PIXELS = 50_000_000  # a phone's largest photos: larger pictures are refused from their header, never decoded
MAX_ASPECT = 50          # nor is a strip: the longer side is at most this many times the shorter
FORMATS = ('PNG', 'JPEG', 'GIF', 'BMP', 'TIFF', 'WEBP')  # the only readers PIL tries on a file (JPEG's reads MPO too)
_DRAFT = 256  # a JPEG is decoded at 1/2, 1/4 or 1/8 of its size (fast) where its longer side keeps this many pixels


def check_image_size(size:tuple, what:str='The image'):
    "A clear error, naming the limit, when an image of `size` (width, height) is too large or too thin to hold a digit"
    w, h = size
    if w*h > MAX_PIXELS:
        raise BinaryDigitsError(f"{what} is {w:,}x{h:,} pixels ({w*h/1e6:,.0f} megapixels): images of up to "
                                f"{MAX_PIXELS/1e6:.0f} megapixels are read; shrink it, or crop it around the digit")
    if max(w, h) > MAX_ASPECT*max(min(w, h), 1):
        raise BinaryDigitsError(f"{what} is {w:,}x{h:,} pixels, a strip: a picture of a digit is at most {MAX_ASPECT} "
                                f"times longer than wide (1:{MAX_ASPECT}); crop it around the digit")


def as_pil_image(o):
    """`o` (a file path, PIL image, array or tensor) as a PIL image in mode 'L', 'LA', 'RGB' or 'RGBA', upright as its
    EXIF says, or a clear error; its size is checked first (`MAX_PIXELS`, `MAX_ASPECT`), for a file from its header"""
    if isinstance(o, (str, Path)): return _open(Path(o).expanduser())
    if hasattr(o, 'detach') and hasattr(o, 'cpu'): o = o.detach().cpu().numpy()  # a torch tensor
    if isinstance(o, np.ndarray): o = _array_image(o)
    if not isinstance(o, Image.Image):
        raise TypeError(f"Cannot make an image of a {type(o).__name__}: give a file path, a PIL image, an array or a "
                        "tensor")
    check_image_size(o.size)
    try: return _usable_mode(o)
    except Exception as e:  # a PIL image opened by the caller is decoded here: anything may go wrong
        raise BinaryDigitsError(f"Could not use the image ({type(e).__name__}: {e})") from e


def _open(fn:Path):
    "The decoded image in file `fn`, upright, in a usable mode; its size checked from its header before decoding"
    with open_regular(fn, 'image file') as f:
        try:
            im = Image.open(f, formats=FORMATS)
            check_image_size(im.size, f"The image {fn}")
            im.draft(im.mode, tuple(max(1, n*_DRAFT//max(im.size)) for n in im.size))  # JPEG only: others ignore it
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            return _usable_mode(im)
        except BinaryDigitsError: raise
        except UnidentifiedImageError:
            raise BinaryDigitsError(f"Could not read the image {fn}: it is not a picture in a format read here "
                                    f"({', '.join(FORMATS)})") from None
        except Image.DecompressionBombError as e:
            raise BinaryDigitsError(f"Could not read the image {fn}: it is larger than {MAX_PIXELS/1e6:.0f} "
                                    f"megapixels, the most read here ({e})") from None
        except Exception as e:  # PIL's decoders raise many kinds of errors on damaged files: each one is this file's
            raise BinaryDigitsError(f"Could not read the image {fn} ({type(e).__name__}: {e}); the file is damaged, "
                                    "or not a picture") from e


def _usable_mode(im):
    "`im` in mode 'L', 'LA', 'RGB' or 'RGBA' (16-bit and float greyscale scaled to 8 bits)"
    if im.mode in ('L', 'LA', 'RGB', 'RGBA'): return im
    if im.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        a = np.array(im, dtype=np.float32)  # a copy of its own, scaled in place
        return Image.fromarray(_to_uint8(a, 65535 if a.max(initial=0) > 255 else 255))
    if im.mode == '1': return im.convert('L')
    return im.convert('RGBA' if im.mode == 'PA' or (im.mode == 'P' and 'transparency' in im.info) else 'RGB')


def _to_uint8(a:np.ndarray, top:float) -> np.ndarray:
    "Values from 0..`top` as uint8 0..255 (`a`, float32, is used as the scratch space: no copy of a large image)"
    np.multiply(a, 255/top, out=a)
    np.clip(np.rint(a, out=a), 0, 255, out=a)
    return a.astype(np.uint8)


def _array_image(o:np.ndarray):
    "A numpy array (HxW, HxWxC, CxHxW or 784 long; uint8, ints, bools or floats in 0..1 or 0..255) as a PIL image"
    a = o.reshape(28, 28) if o.ndim == 1 and o.size == 784 else o
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4): a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1: a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)) or 0 in a.shape:
        raise BinaryDigitsError(f"An image array must be HxW, HxWxC, CxHxW (C: 1 to 4) or 784 long, got shape "
                                f"{o.shape}")
    check_image_size(a.shape[1::-1], f"The image array of shape {o.shape}")
    if a.dtype == bool: a = a.astype(np.uint8)*255
    elif a.dtype != np.uint8:
        a = a.astype(np.float32)
        if not np.isfinite(a).all(): raise BinaryDigitsError("The image array holds NaN or infinite values")
        a = _to_uint8(a, 1.0 if a.max() <= 1.0 else 65535.0 if a.max() > 255 else 255.0)  # 0..1: as the loaders serve
    return Image.fromarray(np.ascontiguousarray(a))  # 'L', 'LA', 'RGB' or 'RGBA' from the shape

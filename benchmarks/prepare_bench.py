"""How fast `prepare_digit` and `test_dl` are, on one CPU core, against their targets:

(a) a 1000x1000 phone-like photo of a digit (an MNIST testing digit drawn in dark ink on shaded, tinted, noisy paper,
    JPEG-compressed) prepared in under 30 ms: timed from the decoded picture and from the JPEG file;
(b) 10,000 MNIST images (28x28 arrays, as a folder of MNIST's PNGs gives them) through `dls.test_dl` at over 5,000
    images per second, with preparation on (the default), against preparation off in the same run.

Each figure is the median of `--repeats` runs, after one warm-up (benchmarks/timing.py). The process is pinned to one
core, with PyTorch on one thread.

    python benchmarks/prepare_bench.py                      # MNIST digits from the bundled sample
    python benchmarks/prepare_bench.py --path /path/to/mnist  # from the full set (IDX files or mnist_png)
"""
from __future__ import annotations
import argparse, io, os, tempfile
from pathlib import Path

import numpy as np

from timing import median_time


def photo(digit:np.ndarray, size:int=1000, seed:int=0):
    "`digit` (28x28 uint8) drawn 60% of a `size`-pixel page's height: dark ink, shading, a tint, noise, JPEG"
    from PIL import Image
    rng = np.random.default_rng(seed)
    h = int(0.6*size*28/20)
    ink = np.zeros((size, size), np.float32)
    up = np.asarray(Image.fromarray(digit).resize((h, h), Image.BICUBIC), np.float32)/255
    y, x = (size - h)//3, (size - h)//2
    ink[y:y+h, x:x+h] = up
    yy, xx = np.mgrid[0:size, 0:size]/size
    paper = (235 - 70*(0.6*yy + 0.4*xx))[..., None]*np.array([1, 0.97, 0.9])
    a = paper*(1 - ink[..., None]) + 40*ink[..., None] + rng.normal(0, 8, (size, size, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, format='JPEG', quality=85)
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--path', help='MNIST folder (IDX files or mnist_png); default: the bundled sample')
    p.add_argument('--repeats', type=int, default=21)
    args = p.parse_args()
    if hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch
    torch.set_num_threads(1)
    from PIL import Image
    from fastai_binary_digits import BinaryDigitsDataLoaders, prepare_digit
    from fastai_binary_digits.mnist import load_digits
    source = dict(path=args.path) if args.path else dict(sample=True)
    digits = load_digits((4, 8), 'testing', **source)
    images = np.concatenate([digits[d][0].numpy() for d in (4, 8)])
    print(f"one core ({os.cpu_count()} on the machine), PyTorch threads: {torch.get_num_threads()}, "
          f"digits from {args.path or 'the bundled sample'}")

    jpeg = photo(images[0])
    pic = Image.open(io.BytesIO(jpeg)).convert('RGB')
    if prepare_digit(pic) is None: raise SystemExit("no digit found in the benchmark's photo")
    t_pic = median_time(lambda: prepare_digit(pic), args.repeats)
    with tempfile.TemporaryDirectory() as d:
        fn = Path(d)/'photo.jpg'
        fn.write_bytes(jpeg)
        t_file = median_time(lambda: prepare_digit(fn), args.repeats)
    print(f"(a) 1000x1000 photo, decoded picture: {1000*t_pic:6.1f} ms  (target < 30 ms: {30/(1000*t_pic):.1f}x under)")
    print(f"    1000x1000 photo, JPEG file:       {1000*t_file:6.1f} ms  (decoding included)")

    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), device='cpu', **source)
    items = list(images[np.arange(10_000) % len(images)])
    t_on = median_time(lambda: dls.test_dl(items), max(3, args.repeats//4))
    t_off = median_time(lambda: dls.test_dl(items, prepare=False), max(3, args.repeats//4))
    print(f"(b) 10,000 MNIST images through test_dl, prepared: {10_000/t_on:8,.0f} images/s "
          f"(target > 5,000: {10_000/t_on/5000:.1f}x)")
    print(f"    the same, preparation off:                   {10_000/t_off:8,.0f} images/s "
          f"(preparing costs {t_on/t_off:.1f}x)")


if __name__ == '__main__': main()

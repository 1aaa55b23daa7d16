"Build the bundled sample from the four original MNIST IDX files: `python -m fastai_binary_digits.build_sample IDX_DIR`"
import argparse, gzip, hashlib
from pathlib import Path

import numpy as np
from .files import atomic_path
from .mnist import SAMPLE_PATH, SPLITS, idx_file, read_idx

__all__ = ['build_sample']

PER_DIGIT = {'training': 1000, 'testing': 200}  # images kept per digit: the first ones of each digit in the file

def _write_idx_gz(arr:np.ndarray, fn:Path):
    "Write `arr` as a gzipped IDX file, without gzip's time stamp and name: equal input, equal bytes"
    code = {np.dtype('uint8'): 0x08, np.dtype('int32'): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + b''.join(int(n).to_bytes(4, 'big') for n in arr.shape)
    with atomic_path(fn) as tmp, open(tmp, 'wb') as f, \
         gzip.GzipFile(filename='', mode='wb', fileobj=f, mtime=0, compresslevel=9) as g:
        g.write(header + arr.astype(arr.dtype.newbyteorder('>')).tobytes())

def build_sample(idx_dir:str|Path, out:str|Path=SAMPLE_PATH, per_digit:dict=PER_DIGIT) -> list:
    "Write the first `per_digit[split]` images of each digit of each split of `idx_dir` to `out`, with their indices"
    idx_dir, out = Path(idx_dir).expanduser(), Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split, prefix in SPLITS.items():
        files = [idx_file(idx_dir, prefix, k) for k in ('images', 'labels')]
        if None in files: raise FileNotFoundError(f"{idx_dir} lacks the {prefix} IDX files (images and labels)")
        images, labels = map(read_idx, files)
        keep = np.sort(np.concatenate([np.flatnonzero(labels == d)[:per_digit[split]] for d in range(10)]))
        for kind, arr in (('images', images[keep]), ('labels', labels[keep]), ('indices', keep.astype(np.int32))):
            written.append(out/f'{prefix}-{kind}-idx{arr.ndim}-{"ubyte" if arr.dtype == np.uint8 else "int"}.gz')
            _write_idx_gz(arr, written[-1])
    return written

def main(argv=None):
    "Build the bundled MNIST sample and print each file with its size and md5"
    p = argparse.ArgumentParser(prog='python -m fastai_binary_digits.build_sample', description=main.__doc__)
    p.add_argument('idx_dir', help="folder holding the four original MNIST IDX files (plain or .gz)")
    p.add_argument('--out', default=str(SAMPLE_PATH), help="folder to write the sample to (default: the package's)")
    args = p.parse_args(argv)
    for fn in build_sample(args.idx_dir, args.out):
        print(f'{fn.name:32} {fn.stat().st_size:>9,} bytes  md5 {hashlib.md5(fn.read_bytes()).hexdigest()}')

if __name__ == '__main__': main()

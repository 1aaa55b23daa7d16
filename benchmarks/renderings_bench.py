"""The accuracy that `prepare_digit` keeps: for each pair of the full-set tests (4 vs 8, 3 vs 7, 2 vs 5), a linear
model and a cnn trained on all its training images as `tests/test_prepare.py` trains them, then measured on ALL its
official testing images, as they are and drawn in every rendering of `tests/renderings.py` (people's digits: ink on
white, coloured ink, a marker, phone photos with shading and shadows, a web canvas, a small light digit on dark).
Prints a Markdown table (accuracy in %, and each rendering's difference with the originals), the same seeds as the
tests; `tests/test_prepare.py` checks the bounds (cnn within 1 point, linear model within 2) on a seeded subset.

    python benchmarks/renderings_bench.py --path /path/to/mnist     # the four MNIST IDX files (or mnist_png)
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent/'tests'))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--path', required=True, help='the full MNIST set: a folder of the four IDX files, or mnist_png')
    p.add_argument('--images', type=int, default=None, help='a seeded choice of this many testing images per pair '
                                                            '(default: all of them)')
    args = p.parse_args()
    from fastai_binary_digits import BinaryDigitsDataLoaders
    from test_prepare import FULL_PAIRS, rendering_hits, rendering_table, train
    start, tables = time.perf_counter(), {}
    for pair in FULL_PAIRS:
        dls = BinaryDigitsDataLoaders.from_mnist(pair=pair, path=args.path, valid='testing', seed=0)
        learns = {arch: train(dls, arch, one_cycle=(2, 1.0)) for arch in ('linear', 'cnn')}
        tables[pair] = rendering_table([rendering_hits(learns, dls, args.images)])
        print(f'{pair[0]} vs {pair[1]}: {len(dls.valid.dataset):,} testing images ({time.perf_counter() - start:.0f} s)',
              file=sys.stderr, flush=True)
    heads = [f'{a} vs {b} {arch}' for a, b in FULL_PAIRS for arch in ('linear', 'cnn')]
    print('| rendering | ' + ' | '.join(heads) + ' |')
    print('|---|' + '---:|'*len(heads))
    for kind in tables[FULL_PAIRS[0]]:
        cells = []
        for pair in FULL_PAIRS:
            for arch in ('linear', 'cnn'):
                acc, orig = tables[pair][kind][arch], tables[pair]['original'][arch]
                cells.append(f'{100*acc:.2f}' + ('' if kind == 'original' else f' ({100*(acc - orig):+.2f})'))
        print(f'| {kind} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__': main()

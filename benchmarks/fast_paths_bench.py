"""What each of the package's fast paths buys: `fit(20, 0.1)` of a learner with all of them, with each one turned back
to fastai's own code, and with none (`fast=False`), timed in turns on the same data from the same initial weights.

- dispatch: `FastLearner.__call__`/`_call_one`, skipping the callback calls proven to do nothing;
- loader: `BinaryDigitsDL` serving slices of whole tensors, not fastai's item-by-item batches.
Each row's ratio is against all the fast paths on (the median of the per-round ratios); every variant must end with
the same weights, bitwise, or the script stops.

    python benchmarks/fast_paths_bench.py                        # the bundled sample's 4 and 8
    python benchmarks/fast_paths_bench.py --path /path/to/mnist  # the full pair (the IDX files)
"""
from __future__ import annotations
import argparse, contextlib, io

from timing import in_turns, paired_ratio

VARIANTS = ('all fast paths', 'fastai dispatch', 'fastai loader', 'none (fast=False)')


def learner(variant:str, args, dls_of):
    "A seeded `binary_learner` with the fast path `variant` names turned back to fastai's code"
    from fastai.learner import Learner
    from fastai_binary_digits import binary_learner
    dls = dls_of()
    if variant == 'fastai loader':
        for dl in dls.loaders: dl.fast = False
    learn = binary_learner(dls, arch=args.arch, seed=args.seed, fast=variant != 'none (fast=False)')
    if variant == 'fastai dispatch':  # this learner only
        learn.__class__ = type('Variant', (type(learn),), dict(__call__=Learner.__call__, _call_one=Learner._call_one))
    return learn


def fit(variant:str, args, dls_of):
    "The final weights of `variant`'s `fit(epochs, lr)`"
    learn = learner(variant, args, dls_of)
    with contextlib.redirect_stdout(io.StringIO()), learn.no_bar(): learn.fit(args.epochs, args.lr)
    return [p.detach().clone() for p in learn.model.parameters()]


def main(args):
    import torch
    from fastai_binary_digits import BinaryDigitsDataLoaders
    torch.set_num_threads(args.threads)
    src = dict(path=args.path) if args.path else dict(sample=True)
    dls_of = lambda: BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), seed=args.seed, **src)
    runs = in_turns({v: (lambda v=v: fit(v, args, dls_of)) for v in VARIANTS}, args.repeats, warmup=True)
    first = runs[VARIANTS[0]].results[0]
    for v, r in runs.items():
        if not all(torch.equal(a, b) for res in r.results for a, b in zip(res, first, strict=True)):
            raise SystemExit(f"{v}: different weights from the fast paths' (a fast path changed a result)")
    data = args.path or 'the bundled sample'
    print(f"`{args.arch}` fit({args.epochs}, {args.lr}) on 4 vs 8 of {data}, {args.threads} torch thread(s), "
          f"medians of {args.repeats} rounds in turns; the same weights, bitwise, in every variant\n")
    print('| variant | fit | x all fast paths |\n|---|---:|---:|')
    for v in VARIANTS:
        print(f'| {v} | {runs[v].median*1e3:,.0f} ms | {paired_ratio(runs[v], runs[VARIANTS[0]]):.2f}x |')


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--path', help='the full MNIST (a folder of the four IDX files; default: the bundled sample)')
    p.add_argument('--arch', default='linear', help='the model (default: linear)')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--repeats', type=int, default=5, help='rounds; each figure is their median')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help="torch's threads (default 1: steadier on a shared machine)")
    main(p.parse_args())

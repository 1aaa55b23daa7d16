"""The safe model file against fastai's pickle export of the same learner: file size and load time, for each built-in
architecture, in one run.

For each architecture a learner is trained on the bundled sample (4 vs 8, `--epochs`, seeded), then exported twice:
`learn.export('linear.safetensors')` (the safe format) and `learn.export('linear.pkl')` (fastai's pickle). Printed:
- the two file sizes and their ratio;
- load time in this process: `load_binary_learner` against fastai's `load_learner` (its pickle warning silenced here
  only, so that printing it is not timed), `--repeats` loads each, the two taking turns; each time is the median,
  the ratio the median of the per-round ratios (benchmarks/timing.py);
- load time in a fresh process (`--fresh` processes each, in turns): the first load after `import fastai_binary_digits`,
  which also pays for whatever that load imports the first time.
Both loaded learners are checked to give bitwise the same predictions as the learner that wrote them.

    python benchmarks/model_files_bench.py                 # about a minute on two cores
    python benchmarks/model_files_bench.py --repeats 50 --fresh 9 --epochs 5
"""
from __future__ import annotations
import argparse, math, sys, tempfile, warnings
from pathlib import Path

from timing import Runs, fresh_seconds, in_turns, paired_ratio

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ('linear', 'simple', 'deep', 'cnn')
FRESH = """
import sys, time, warnings
warnings.simplefilter('ignore')  # fastai's pickle warning: not what is timed
import fastai_binary_digits
from fastai_binary_digits import load_model_file
t = time.perf_counter()
load_model_file(sys.argv[1])
print(time.perf_counter() - t)
"""


def train(arch:str, epochs:int):
    "A learner of `arch` trained on the bundled sample's 4s and 8s, on the CPU"
    from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=42, device='cpu')
    learn = binary_learner(dls, arch, seed=0)
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 0.1)
    return learn


def load_pickle(fn:Path):
    from fastai.learner import load_learner
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # fastai's warning that pickles run code: silenced in this benchmark only
        return load_learner(fn)


def load_safe(fn:Path):
    from fastai_binary_digits import load_binary_learner
    return load_binary_learner(fn)


def same_predictions(*learners) -> bool:
    "Whether all `learners` give bitwise the same probabilities on the sample's validation images"
    import torch
    x = list(learners[0].dls.valid.dataset.x[:64])
    preds = []
    for l in learners:
        with l.no_bar(): preds.append(l.get_preds(dl=l.dls.test_dl(x))[0])
    return all(torch.equal(preds[0], p) for p in preds[1:])


def main(args):
    import torch
    torch.set_num_threads(args.threads)
    print(f"bundled sample, 4 vs 8, fit({args.epochs}); in-process loads: median of {args.repeats}; fresh-process "
          f"loads: median of {args.fresh}; torch threads: {torch.get_num_threads()}\n")
    head = ('arch', 'safe bytes', 'pkl bytes', 'pkl/safe', 'load safe', 'load pkl', 'pkl/safe', 'fresh safe',
            'fresh pkl', 'pkl/safe')
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for arch in args.archs:
            learn = train(arch, args.epochs)
            safe, pkl = Path(d)/f'{arch}.safetensors', Path(d)/f'{arch}.pkl'
            learn.export(safe)
            learn.export(pkl)
            if not same_predictions(learn, load_safe(safe), load_pickle(pkl)):
                raise SystemExit(f"{arch}: the loaded learners do not predict as the learner that wrote them")
            t = in_turns(dict(safe=lambda: load_safe(safe), pkl=lambda: load_pickle(pkl)), args.repeats, keep=False)
            f = in_turns(dict(safe=lambda: fresh_seconds(FRESH, safe, cwd=ROOT),
                              pkl=lambda: fresh_seconds(FRESH, pkl, cwd=ROOT)), args.fresh, own=True) \
                if args.fresh else dict(safe=Runs([math.nan]), pkl=Runs([math.nan]))
            ms = lambda runs: f'{runs.median*1000:,.1f} ms'
            s, p = safe.stat().st_size, pkl.stat().st_size
            rows.append((arch, f'{s:,}', f'{p:,}', f'{p/s:.2f}x', ms(t['safe']), ms(t['pkl']),
                         f"{paired_ratio(t['pkl'], t['safe']):.2f}x", ms(f['safe']), ms(f['pkl']),
                         f"{paired_ratio(f['pkl'], f['safe']):.2f}x"))
            print(' | '.join(rows[-1]), flush=True)
    print()
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for r in (head, *rows): print('  '.join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print("\n(pkl/safe: how many times larger, or slower, fastai's pickle is than the safe file)")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--archs', nargs='+', choices=ARCHS, default=list(ARCHS), help='architectures to measure')
    p.add_argument('--epochs', type=int, default=1, help='epochs to train each learner before exporting it')
    p.add_argument('--repeats', type=int, default=20, help='in-process loads of each file')
    p.add_argument('--fresh', type=int, default=5, help='fresh-process loads of each file (0: skip)')
    p.add_argument('--threads', type=int, default=1, help='torch threads in this process')
    return p.parse_args(argv)


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))  # the package of this checkout, before any installed copy
    main(parse())

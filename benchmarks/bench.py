"""Load and train a pair of MNIST digits three ways, in one run on the same data, and print how they compare.

(a) the book's recipe (chapter 4): `tensor(Image.open(f))` per PNG, `torch.stack`, the pair's images and labels in
    0..1 floats (through the package's own `pair_tensors`, `images_to_x` and `split_indices`, so that all paths hold
    the same images), a PyTorch `DataLoader` over `list(zip(x, y))`, `Learner(DataLoaders(dl, valid_dl), model,
    opt_func=SGD, loss_func=mnist_loss, metrics=batch_accuracy).fit(epochs, lr)`; its training loader shuffles, as (b)
    and (c) do (the book's does not: fed all the first digit then all the second, the deep net does not learn);
(b) the floor: a plain PyTorch loop on the same pre-stacked tensors, with the same model, initial weights, batch
    size, epochs, learning rate, shuffling, and loss and accuracy on the validation set each epoch (`torch.optim.SGD`);
(c) this package: `BinaryDigitsDataLoaders.from_mnist(pair=...)` with its cache removed (cold) and kept (warm), and
    `binary_learner(dls, arch=A).fit(epochs, lr)`; also (c) on loaders that a `binary_learner(dls, fast=False)` was
    made and trained on first, against (c) on fresh loaders: `fast=False` is that learner's only.

Timing (benchmarks/timing.py): every time is the median of `--repeats` rounds in which the paths take turns; a ratio
is the median of the ratios within each round. Peak memory: each path runs (load, then both fits) in its own process
after the same imports; the figure is the process's peak resident memory while the path runs (on Linux the peak is
reset after the imports, which peak higher than any path). Imports are timed in fresh interpreters, in turns.

Data: the bundled sample by default; the full set with `--path IDX_DIR` (the four MNIST IDX files), or when
`FASTAI_HOME` already holds `data/mnist_png`. IDX files and the sample are first written as PNGs (fastai's
`mnist_png` layout) into a temporary `FASTAI_HOME`, so the book's path and `untar_data(URLs.MNIST)` both read PNGs.

    python benchmarks/bench.py                        # bundled sample (a smoke run: the targets are for the full set)
    python benchmarks/bench.py --path /path/to/mnist  # the full 4-and-8 pair, as the targets are stated
"""
from __future__ import annotations
import argparse, ast, contextlib, io, math, os, shutil, statistics, tempfile, time
from pathlib import Path

from timing import PeakMemory, child_peak, fresh_seconds, in_turns, paired_ratio

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT/'fastai_binary_digits'
ARCHS = ('linear', 'deep')


# ---------------------------------------------------------------------------------------------------------------
# The three paths

def book_mnist_loss(predictions, targets):
    "The book's loss, as written in chapter 4"
    import torch
    predictions = predictions.sigmoid()
    return torch.where(targets==1, 1-predictions, predictions).mean()


def book_batch_accuracy(xb, yb):
    "The book's metric, as written in chapter 4"
    preds = xb.sigmoid()
    correct = (preds>0.5) == yb
    return correct.float().mean()


def book_load(pair, bs:int, valid_pct:float, seed:int):
    "(a)'s data: the book's load, one PNG at a time from fastai's `untar_data(URLs.MNIST)`, to fastai `DataLoaders`"
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from fastai.data.core import DataLoaders
    from fastai.data.external import untar_data, URLs
    from fastai.torch_core import tensor
    from fastai_binary_digits.data import images_to_x, pair_tensors, split_indices
    path = untar_data(URLs.MNIST)
    # in index order (the book sorts by name) so that the split picks the images the package's split picks
    files = lambda d: sorted((path/'training'/str(d)).ls(), key=lambda f: int(f.stem))
    digits = {d: (torch.stack([tensor(Image.open(o)) for o in files(d)]), torch.tensor([int(o.stem) for o in files(d)]))
              for d in pair}
    images, y, _ = pair_tensors(digits, pair)
    x = images_to_x(images)
    vi, ti = split_indices(len(x), valid_pct, seed)
    dl = DataLoader(list(zip(x[ti], y[ti])), batch_size=bs, shuffle=True)  # shuffled, as (b) and (c): see above
    valid_dl = DataLoader(list(zip(x[vi], y[vi])), batch_size=bs)
    return DataLoaders(dl, valid_dl)


def book_fit(dls, model, epochs:int, lr:float) -> float:
    "(a)'s training: the book's `Learner`; returns the final validation accuracy"
    from fastai.learner import Learner
    from fastai.optimizer import SGD
    learn = Learner(dls, model, opt_func=SGD, loss_func=book_mnist_loss, metrics=book_batch_accuracy)
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(epochs, lr)  # fastai's progress output, as in (c)
    return float(learn.recorder.values[-1][-1])


def floor_fit(tensors, model, epochs:int, lr:float, bs:int) -> float:
    "(b): a plain PyTorch loop doing (c)'s work: shuffled batches, SGD, validation loss and accuracy each epoch"
    import torch
    tx, ty, vx, vy = tensors
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = len(tx)
    for epoch in range(epochs):
        model.train()
        perm, train_loss = torch.randperm(n), 0.
        for i in range(0, n, bs):
            idx = perm[i:i+bs]
            loss = book_mnist_loss(model(tx[idx]), ty[idx])
            loss.backward()
            opt.step()
            opt.zero_grad()
            train_loss += loss.detach()
        model.eval()
        valid_loss = correct = 0.
        with torch.no_grad():
            for i in range(0, len(vx), bs):
                xb, yb = vx[i:i+bs], vy[i:i+bs]
                out = model(xb)
                valid_loss += book_mnist_loss(out, yb)*len(xb)
                correct += book_batch_accuracy(out, yb)*len(xb)
    return float(correct/len(vx))


def package_load(pair, bs:int, valid_pct:float, seed:int, cold:bool):
    "(c)'s data: `from_mnist` from fastai's `mnist_png`, its cache removed first when `cold`"
    from fastai_binary_digits import BinaryDigitsDataLoaders
    if cold: remove_cache()
    return BinaryDigitsDataLoaders.from_mnist(pair=pair, valid_pct=valid_pct, seed=seed, bs=bs)


def package_fit(dls, arch:str, init:dict, epochs:int, lr:float, seed:int) -> float:
    "(c)'s training: `binary_learner(dls, arch=arch)`, whose seeded weights must be `init`; returns the final accuracy"
    import torch
    from fastai_binary_digits import binary_learner
    learn = binary_learner(dls, arch=arch, seed=seed)
    if any(not torch.equal(v, init[k]) for k, v in learn.model.state_dict().items()):
        raise RuntimeError("binary_learner's seeded initial weights differ from the other paths'")
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(epochs, lr)
    return float(learn.recorder.values[-1][-1])


def tensors(dls) -> tuple:
    "(b)'s data: the tensors (c)'s loaders hold"
    return dls.train.dataset.x, dls.train.dataset.y, dls.valid.dataset.x, dls.valid.dataset.y


def initial_weights(arch:str, seed:int) -> dict:
    "The weights `binary_learner(arch=arch, seed=seed)` starts from, for every path"
    from fastai.torch_core import set_seed
    from fastai_binary_digits import ARCHS as archs
    set_seed(seed)
    return archs[arch]().state_dict()


def model_from(arch:str, init:dict):
    from fastai_binary_digits import ARCHS as archs
    model = archs[arch]()
    model.load_state_dict(init)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Data staging

def mnist_png() -> Path:
    return Path(os.environ['FASTAI_HOME'])/'data'/'mnist_png'


def remove_cache():
    "Remove the package's cache of decoded PNGs (`.fastai_binary_digits` beside the digit folders)"
    shutil.rmtree(mnist_png()/'.fastai_binary_digits', ignore_errors=True)


def stage(args, tmp:Path) -> str:
    "Point `FASTAI_HOME` at the data to use, writing PNGs into `tmp` when needed; returns a description"
    from fastai_binary_digits.mnist import write_mnist_png
    home = os.environ.get('FASTAI_HOME')
    if args.path is None and home and (Path(home)/'data'/'mnist_png'/'training').is_dir():
        return f"fastai's mnist_png in FASTAI_HOME={home}"
    os.environ['FASTAI_HOME'] = str(tmp/'fastai_home')
    t = time.perf_counter()
    if args.path is None: write_mnist_png(mnist_png(), sample=True, digits=args.pair)
    else: write_mnist_png(mnist_png(), path=args.path, digits=args.pair)
    src = 'the bundled sample' if args.path is None else f'IDX files in {args.path}'
    return f"{src}, digits {args.pair} written as PNGs into a temporary FASTAI_HOME ({time.perf_counter()-t:.1f} s)"


# ---------------------------------------------------------------------------------------------------------------
# Measuring

def run_child(path:str, args):
    "In the child process: the same imports for every path, then the path once, then its peak memory"
    import torch, PIL.Image  # noqa: F401 (the same set-up for every path)
    if args.threads: torch.set_num_threads(args.threads)
    import fastai.learner, fastai.optimizer, fastai.data.external  # noqa: F401
    from fastai_binary_digits import binary_learner  # noqa: F401 (the whole API: the package's `__init__` is lazy)
    with PeakMemory() as mem:
        for arch in ARCHS:
            init = initial_weights(arch, args.seed)
            if path == 'book':
                book_fit(book_load(args.pair, args.bs, 0.2, args.seed), model_from(arch, init), args.epochs, args.lr)
                continue
            dls = package_load(args.pair, args.bs, 0.2, args.seed, cold=False)
            if path == 'package': package_fit(dls, arch, init, args.epochs, args.lr, args.seed)
            else: floor_fit(tensors(dls), model_from(arch, init), args.epochs, args.lr, args.bs)
    print(mem.json())


def peaks(args) -> dict:
    "Each path's peak memory, measured in a child process of its own"
    opts = ['--epochs', args.epochs, '--lr', args.lr, '--bs', args.bs, '--pair', *args.pair, '--seed', args.seed,
            '--threads', args.threads]
    return {p: child_peak([__file__, '--child', p, *opts], env=os.environ.copy()) for p in ('book', 'floor', 'package')}


def package_fastai_imports() -> list:
    "The fastai modules the package imports at module level (read from its source, so the list follows the code)"
    mods = set()
    for f in sorted(PKG.glob('*.py')):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Import): names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module: names = [node.module]
            else: continue
            mods.update(n for n in names if n == 'fastai' or n.startswith('fastai.'))
    return sorted(mods)


def import_time(stmt:str) -> float:
    "Seconds `stmt` takes in a fresh interpreter (the interpreter's own start-up excluded)"
    return fresh_seconds(f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)", cwd=ROOT)


def agree(accs:list, n_valid:int) -> tuple:
    "Whether accuracies on `n_valid` images agree within noise: 3 binomial standard errors (at least 2 images)"
    p = statistics.mean(accs)
    tol = max(3*math.sqrt(max(p*(1-p), 1e-4)/n_valid), 2/n_valid)
    return max(accs) - min(accs) <= tol, tol


def measure_loads(args) -> tuple:
    "The book's and the package's loaders, and the three loads timed in turns after one untimed round"
    import torch
    pair, bs, seed = tuple(args.pair), args.bs, args.seed
    book_dls, dls = book_load(pair, bs, 0.2, seed), package_load(pair, bs, 0.2, seed, cold=True)
    loads = in_turns({'book': lambda: book_load(pair, bs, 0.2, seed),
                      'cold': lambda: package_load(pair, bs, 0.2, seed, cold=True),
                      'warm': lambda: package_load(pair, bs, 0.2, seed, cold=False)}, args.repeats, keep=False)
    x, y = (torch.stack([o[i] for o in book_dls.train.dataset]) for i in (0, 1))
    if not (x.equal(dls.train.dataset.x) and y.equal(dls.train.dataset.y)):
        raise RuntimeError("the book's load and the package's hold different images or labels")
    return book_dls, dls, loads


def measure_fits(args, book_dls, dls) -> dict:
    "arch: the three fits of `arch`, timed in turns, each round from the same initial weights"
    fits = {}
    for arch in ARCHS:
        init = initial_weights(arch, args.seed)
        fits[arch] = in_turns({
            'book': lambda: book_fit(book_dls, model_from(arch, init), args.epochs, args.lr),
            'floor': lambda: floor_fit(tensors(dls), model_from(arch, init), args.epochs, args.lr, args.bs),
            'package': lambda: package_fit(dls, arch, init, args.epochs, args.lr, args.seed)}, args.repeats)
    return fits


def measure_after_fast_false(args, arch:str='linear') -> dict:
    "(c)'s fit on fresh loaders and on loaders a `fast=False` learner was made and trained on first, in turns"
    from fastai_binary_digits import binary_learner
    pair, init = tuple(args.pair), initial_weights(arch, args.seed)
    fresh, shared = (package_load(pair, args.bs, 0.2, args.seed, cold=False) for _ in range(2))
    slow = binary_learner(shared, arch=arch, seed=args.seed, fast=False)
    with slow.no_bar(), slow.no_logging(): slow.fit(1, args.lr)
    return in_turns({'fresh': lambda: package_fit(fresh, arch, init, args.epochs, args.lr, args.seed),
                     'after': lambda: package_fit(shared, arch, init, args.epochs, args.lr, args.seed)}, args.repeats)


def measure_imports(args) -> tuple:
    "Import times of the package's API and of the fastai modules it imports, in fresh interpreters, in turns"
    mods = package_fastai_imports()
    return mods, in_turns({'package': lambda: import_time('from fastai_binary_digits import *'),  # `import`: no API
                           'fastai': lambda: import_time('import ' + ', '.join(mods))}, max(args.repeats, 5), own=True)


# ---------------------------------------------------------------------------------------------------------------
# The report

def ms(s:float) -> str: return f'{s*1e3:,.0f} ms' if s < 10 else f'{s:,.1f} s'
def mb(kb:float) -> str: return f'{kb/1024:,.0f} MB'
def accuracy(runs) -> float: return statistics.median(runs.results)


def load_rows(loads:dict) -> list:
    return [('load', '(a) book', ms(loads['book'].median), '', ''),
            ('load', '(c) package, cold', ms(loads['cold'].median),
             f"(c)/(a) {paired_ratio(loads['cold'], loads['book']):.2f}", ''),
            ('load', '(c) package, warm', ms(loads['warm'].median),
             f"(a)/(c) {paired_ratio(loads['book'], loads['warm']):.0f}x", '')]


def fit_rows(arch:str, f:dict, n_valid:int) -> tuple:
    "The table's rows of the three fits of `arch`, and its targets"
    pairs = (('package', 'floor'), ('book', 'package'), ('book', 'floor'))
    c_b, a_c, a_b = (paired_ratio(f[p], f[q]) for p, q in pairs)
    acc = {k: accuracy(r) for k, r in f.items()}
    rows = [(f'fit {arch}', '(a) book', ms(f['book'].median), f'(a)/(b) {a_b:.2f}', f"{acc['book']:.4f}"),
            (f'fit {arch}', '(b) floor', ms(f['floor'].median), '', f"{acc['floor']:.4f}"),
            (f'fit {arch}', '(c) package', ms(f['package'].median), f'(c)/(b) {c_b:.2f}, (a)/(c) {a_c:.2f}',
             f"{acc['package']:.4f}")]
    limit = 1.5 if arch == 'linear' else 1.15
    ok, tol = agree(list(acc.values()), n_valid)
    return rows, [(f'fit {arch}: (c) at most {limit}x the floor', f'{c_b:.2f}x', c_b <= limit),
                  (f'fit {arch}: final accuracies agree within noise (+/-{tol:.4f})',
                   ' / '.join(f'{v:.4f}' for v in acc.values()), ok)]


def after_rows(runs:dict, arch:str='linear') -> tuple:
    "The rows and target of (c)'s fit after a `fast=False` learner on the same loaders, against fresh loaders"
    ratio = paired_ratio(runs['after'], runs['fresh'])
    same = runs['after'].results == runs['fresh'].results
    rows = [(f'fit {arch}', '(c) fresh dls', ms(runs['fresh'].median), '', f"{accuracy(runs['fresh']):.4f}"),
            (f'fit {arch}', '(c) dls of a fast=False learner', ms(runs['after'].median), f'{ratio:.2f}x fresh',
             f"{accuracy(runs['after']):.4f}")]
    return rows, [(f'fit {arch} on loaders a fast=False learner used: as fast as on fresh ones (at most 1.10x), '
                   'same accuracy', f'{ratio:.2f}x, {"same" if same else "DIFFERENT"}', ratio <= 1.10 and same)]


def other_rows(loads:dict, imp:dict, peak:dict) -> tuple:
    "The rows and targets of the imports and the peak memory, and the load targets"
    imp_ratio = paired_ratio(imp['package'], imp['fastai'])
    rows = [('import', 'fastai modules it needs', ms(imp['fastai'].median), '', ''),
            ('import', 'fastai_binary_digits', ms(imp['package'].median), f'{imp_ratio:.2f}x', '')]
    for p, label in (('book', '(a) book'), ('floor', '(b) floor'), ('package', '(c) package')):
        rows.append(('peak memory', label, mb(peak[p]['peak_kb']),
                     f"+{mb(peak[p]['peak_kb'] - peak[p]['base_kb'])} over the imports'", ''))
    warm_x, cold_x = paired_ratio(loads['book'], loads['warm']), paired_ratio(loads['cold'], loads['book'])
    return rows, [('warm load at least 50x faster than the book', f'{warm_x:.0f}x', warm_x >= 50),
                  ('cold load no slower than the book', f'{cold_x:.2f}x the book', cold_x <= 1.0),
                  ('import at most 10% more than the fastai modules it needs', f'{imp_ratio:.2f}x', imp_ratio <= 1.10),
                  ('peak memory of (c) no more than (a)', f"{mb(peak['package']['peak_kb'])} vs "
                   f"{mb(peak['book']['peak_kb'])}", peak['package']['peak_kb'] <= peak['book']['peak_kb'])]


def print_table(rows:list):
    head = ('what', 'path', 'median', 'ratio', 'valid acc')
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |'
    print(line(head)); print('|' + '|'.join('-'*(w+2) for w in widths) + '|')
    for r in rows: print(line(r))


def report(args, data_desc:str, t_start:float):
    import torch
    load_avg = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, 'getloadavg') else ''
    print(f"Data: {data_desc}\nPair {tuple(args.pair)}, 20% validation (seed {args.seed}), batch {args.bs}, "
          f"{args.epochs} epochs, lr {args.lr}; {args.repeats} repeats; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores{load_avg}\n")
    book_dls, dls, loads = measure_loads(args)
    fits, after = measure_fits(args, book_dls, dls), measure_after_fast_false(args)
    peak, (mods, imp) = peaks(args), measure_imports(args)
    rows, targets = load_rows(loads), []
    for arch in ARCHS:
        r, t = fit_rows(arch, fits[arch], len(dls.valid.dataset))
        rows, targets = rows + r, targets + t
    for r, t in (after_rows(after), other_rows(loads, imp, peak)): rows, targets = rows + r, targets + t
    print_table(rows)
    sample = ' (stated for the full 4-and-8 pair: on the sample they are only indicative)'
    print(f"\nTargets{sample if 'bundled sample' in data_desc else ''}:")
    for what, got, ok in targets: print(f"  [{'met' if ok else 'NOT MET'}] {what}: {got}")
    print(f"\nfastai modules the package imports: {', '.join(mods)}")
    print(f"Ratios are medians of per-round ratios; the whole run took {time.perf_counter()-t_start:.0f} s.")


def main(args):
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix='fastai_binary_digits_bench_'))
    try: report(args, stage(args, tmp), t_start)
    finally: shutil.rmtree(tmp, ignore_errors=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--path', type=Path, help='folder holding the four MNIST IDX files (default: the bundled sample)')
    p.add_argument('--pair', type=int, nargs=2, default=[4, 8], help='the two digits (default: 4 8)')
    p.add_argument('--repeats', type=int, default=3, help='runs of each path; each figure is their median (at least 3)')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--seed', type=int, default=0, help='seed of the split, the initial weights and the shuffling')
    p.add_argument('--threads', type=int, default=1,
                   help="torch's intra-op threads in every process (default 1: on a shared or busy machine, two or "
                        "more threads wait on each other and the figures swing tenfold; 0: torch's own choice)")
    p.add_argument('--child', choices=('book', 'floor', 'package'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 3: p.error(f"--repeats must be at least 3 (each figure is a median), got {args.repeats}")
    return args


if __name__ == '__main__':
    args = parse()
    if args.child: run_child(args.child, args)
    else: main(args)

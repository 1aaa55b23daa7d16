"""Load and train a pair of MNIST digits three ways, in one run on the same data, and print how they compare.

(a) the book's recipe (chapter 4): `tensor(Image.open(f))` per PNG, `torch.stack`, `.float()/255`, a PyTorch
    `DataLoader` over `list(zip(x, y))`, `Learner(DataLoaders(dl, valid_dl), model, opt_func=SGD,
    loss_func=mnist_loss, metrics=batch_accuracy).fit(epochs, lr)`; its training loader shuffles, as (b) and (c) do
    (the book's does not: fed all the first digit then all the second, the deep net does not learn);
(b) the floor: a plain PyTorch loop on the same pre-stacked tensors, with the same model, initial weights, batch
    size, epochs, learning rate, shuffling, and loss and accuracy on the validation set each epoch (`torch.optim.SGD`);
(c) this package: `BinaryDigitsDataLoaders.from_mnist(pair=...)` with its cache removed (cold) and kept (warm), and
    `binary_learner(dls, arch=A).fit(epochs, lr)`.

Every time is the median of `--repeats` runs, the paths taking turns within each round; a ratio is the median of the
ratios within each round, so that a machine slowing down or speeding up during the run moves both sides alike. Peak
memory: each path runs (load, then both fits) in its own process after the same imports; the figure is the process's
peak resident memory while the path runs (Linux: the peak is reset after the imports through /proc/self/clear_refs,
since importing torch and fastai peaks higher than any path; elsewhere `getrusage(RUSAGE_SELF).ru_maxrss`, imports
included). Imports are timed in fresh interpreters, in turns.

Data: the bundled sample by default; the full set with `--path IDX_DIR` (the four MNIST IDX files), or when
`FASTAI_HOME` already holds `data/mnist_png`. IDX files and the sample are first written as PNGs (fastai's
`mnist_png` layout) into a temporary `FASTAI_HOME`, so the book's path and `untar_data(URLs.MNIST)` both read PNGs.

    python benchmarks/bench.py                                  # bundled sample (a smoke run: the targets are for the full set)
    python benchmarks/bench.py --path /path/to/mnist            # the full 4-and-8 pair, as the targets are stated
"""
from __future__ import annotations
import argparse, ast, contextlib, io, json, math, os, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

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


def split_idxs(n:int, valid_pct:float, seed:int):
    "The package's random split (`from_mnist(valid='split', seed=seed)`): sorted validation and training indices"
    import torch
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(valid_pct*n)
    return perm[:cut].sort().values, perm[cut:].sort().values


def book_load(pair, bs:int, valid_pct:float, seed:int):
    "(a)'s data: the book's load, from the PNGs of fastai's `untar_data(URLs.MNIST)` to its `DataLoaders`"
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from fastai.data.core import DataLoaders
    from fastai.data.external import untar_data, URLs
    from fastai.torch_core import tensor
    path = untar_data(URLs.MNIST)
    # in index order (the book sorts by name) so that the split below picks the images the package's split picks
    files = lambda d: sorted((path/'training'/str(d)).ls(), key=lambda f: int(f.stem))
    stacked = [torch.stack([tensor(Image.open(o)) for o in files(d)]).float()/255 for d in pair]
    x = torch.cat(stacked).view(-1, 28*28)
    y = torch.tensor([0]*len(stacked[0]) + [1]*len(stacked[1])).unsqueeze(1).float()
    vi, ti = split_idxs(len(x), valid_pct, seed)
    dl = DataLoader(list(zip(x[ti], y[ti])), batch_size=bs, shuffle=True)  # shuffled, as (b) and (c): see below
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

def timed(f, *args, **kwargs):
    t = time.perf_counter()
    res = f(*args, **kwargs)
    return time.perf_counter() - t, res


def in_turns(paths:dict, repeats:int, keep:bool=True) -> dict:
    "Run each of `paths` (name -> function) once per round, in turns; name -> (times, results, or None unless `keep`)"
    res = {k: ([], []) for k in paths}
    for _ in range(repeats):
        for k, f in paths.items():
            t, r = timed(f)
            res[k][0].append(t); res[k][1].append(r if keep else None)
    return res


def paired_ratio(num:list, den:list) -> float:
    "The median of the ratios taken round by round"
    return statistics.median(a/b for a, b in zip(num, den))


def child_peak(path:str, args) -> dict:
    "Run one path in a fresh process (same imports for each) and read its peak resident memory"
    cmd = [sys.executable, __file__, '--child', path, '--epochs', str(args.epochs), '--lr', str(args.lr),
           '--bs', str(args.bs), '--pair', *map(str, args.pair), '--seed', str(args.seed), '--threads', str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode: raise RuntimeError(f"the memory run of {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(path:str, args):
    "In the child process: the same imports for every path, then the path once, then its peak memory"
    import torch, PIL.Image  # noqa: F401 (the same set-up for every path)
    if args.threads: torch.set_num_threads(args.threads)
    import fastai.learner, fastai.optimizer, fastai.data.external  # noqa: F401
    from fastai_binary_digits import binary_learner  # noqa: F401 (the whole API: the package's `__init__` is lazy)
    reset = _reset_peak()
    base = _status_kb('VmRSS') if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for arch in ARCHS:
        init = initial_weights(arch, args.seed)
        if path == 'book': book_fit(book_load(args.pair, args.bs, 0.2, args.seed), model_from(arch, init), args.epochs, args.lr)
        elif path == 'package': package_fit(package_load(args.pair, args.bs, 0.2, args.seed, cold=False), arch, init,
                                            args.epochs, args.lr, args.seed)
        else:
            dls = package_load(args.pair, args.bs, 0.2, args.seed, cold=False)
            tensors = (dls.train.dataset.x, dls.train.dataset.y, dls.valid.dataset.x, dls.valid.dataset.y)
            del dls
            floor_fit(tensors, model_from(arch, init), args.epochs, args.lr, args.bs)
    peak = _status_kb('VmHWM') if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(base_kb=base, peak_kb=peak, reset=reset)))


def _reset_peak() -> bool:
    "Reset this process's peak resident memory (Linux >= 4.0), so that it measures what comes next"
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return _status_kb('VmHWM') is not None
    except OSError: return False


def _status_kb(field:str):
    "A memory figure (kB) from /proc/self/status, or None"
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(field + ':'): return int(line.split()[1])
    except OSError: pass
    return None


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
    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode: raise RuntimeError(f"`{stmt}` failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def agree(accs:list, n_valid:int) -> tuple:
    "Whether accuracies on `n_valid` images agree within noise: 3 binomial standard errors (at least 2 images)"
    p = statistics.mean(accs)
    tol = max(3*math.sqrt(max(p*(1-p), 1e-4)/n_valid), 2/n_valid)
    return max(accs) - min(accs) <= tol, tol


# ---------------------------------------------------------------------------------------------------------------

def main(args):
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix='fastai_binary_digits_bench_'))
    try: report(args, stage(args, tmp), t_start)
    finally: shutil.rmtree(tmp, ignore_errors=True)


def report(args, data_desc:str, t_start:float):
    import torch
    R, pair, bs, seed = args.repeats, tuple(args.pair), args.bs, args.seed
    print(f"Data: {data_desc}")
    load_avg = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, 'getloadavg') else ''
    print(f"Pair {pair}, 20% validation (seed {seed}), batch {bs}, {args.epochs} epochs, lr {args.lr}; {R} repeats; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores{load_avg}\n")

    # Loading: one untimed round first (imports, page cache), then the three in turns
    load = lambda cold: package_load(pair, bs, 0.2, seed, cold)
    book_dls, dls = book_load(pair, bs, 0.2, seed), load(True)
    loads = in_turns({'book': lambda: book_load(pair, bs, 0.2, seed), 'cold': lambda: load(True),
                      'warm': lambda: load(False)}, R, keep=False)
    tx, ty = torch.stack([o[0] for o in book_dls.train.dataset]), torch.stack([o[1] for o in book_dls.train.dataset])
    same = torch.equal(tx, dls.train.dataset.x) and torch.equal(ty, dls.train.dataset.y)
    if not same: raise RuntimeError("the book's load and the package's hold different images or labels")
    ds = dls.train.dataset, dls.valid.dataset
    tensors = (ds[0].x, ds[0].y, ds[1].x, ds[1].y)
    n_valid = len(ds[1])
    med = {k: statistics.median(v[0]) for k, v in loads.items()}

    fits = {}
    for arch in ARCHS:
        init = initial_weights(arch, seed)
        fit_paths = {'book': lambda: book_fit(book_dls, model_from(arch, init), args.epochs, args.lr),
                     'floor': lambda: floor_fit(tensors, model_from(arch, init), args.epochs, args.lr, bs),
                     'package': lambda: package_fit(dls, arch, init, args.epochs, args.lr, seed)}
        fits[arch] = in_turns(fit_paths, R)

    peaks = {p: child_peak(p, args) for p in ('book', 'floor', 'package')}

    mods = package_fastai_imports()
    imp = {'package': [], 'fastai': []}
    for _ in range(max(R, 5)):
        imp['package'].append(import_time('from fastai_binary_digits import *'))  # `import` alone loads no API
        imp['fastai'].append(import_time('import ' + ', '.join(mods)))

    # ------------------------------------------------------------------ the table
    ms = lambda s: f'{s*1e3:,.0f} ms' if s < 10 else f'{s:,.1f} s'
    rows = [('load', '(a) book', ms(med['book']), '', ''),
            ('load', '(c) package, cold', ms(med['cold']), f"(c)/(a) {paired_ratio(loads['cold'][0], loads['book'][0]):.2f}", ''),
            ('load', '(c) package, warm', ms(med['warm']), f"(a)/(c) {paired_ratio(loads['book'][0], loads['warm'][0]):.0f}x", '')]
    targets = []
    for arch in ARCHS:
        f = fits[arch]
        t = {k: statistics.median(v[0]) for k, v in f.items()}
        acc = {k: statistics.median(v[1]) for k, v in f.items()}
        c_b, a_c = paired_ratio(f['package'][0], f['floor'][0]), paired_ratio(f['book'][0], f['package'][0])
        a_b = paired_ratio(f['book'][0], f['floor'][0])
        rows += [(f'fit {arch}', '(a) book', ms(t['book']), f'(a)/(b) {a_b:.2f}', f"{acc['book']:.4f}"),
                 (f'fit {arch}', '(b) floor', ms(t['floor']), '', f"{acc['floor']:.4f}"),
                 (f'fit {arch}', '(c) package', ms(t['package']), f'(c)/(b) {c_b:.2f}, (a)/(c) {a_c:.2f}',
                  f"{acc['package']:.4f}")]
        limit = 1.5 if arch == 'linear' else 1.15
        targets.append((f'fit {arch}: (c) at most {limit}x the floor', f'{c_b:.2f}x', c_b <= limit))
        ok, tol = agree(list(acc.values()), n_valid)
        targets.append((f'fit {arch}: final accuracies agree within noise (+/-{tol:.4f})',
                        ' / '.join(f'{v:.4f}' for v in acc.values()), ok))
    imp_med = {k: statistics.median(v) for k, v in imp.items()}
    imp_ratio = paired_ratio(imp['package'], imp['fastai'])
    rows += [('import', 'fastai modules it needs', ms(imp_med['fastai']), '', ''),
             ('import', 'fastai_binary_digits', ms(imp_med['package']), f'{imp_ratio:.2f}x', '')]
    mb = lambda kb: f'{kb/1024:,.0f} MB'
    for p, label in (('book', '(a) book'), ('floor', '(b) floor'), ('package', '(c) package')):
        rows.append(('peak memory', label, mb(peaks[p]['peak_kb']), f"+{mb(peaks[p]['peak_kb'] - peaks[p]['base_kb'])} over the imports'", ''))

    head = ('what', 'path', 'median', 'ratio', 'valid acc')
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    line = lambda r: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |'
    print(line(head)); print('|' + '|'.join('-'*(w+2) for w in widths) + '|')
    for r in rows: print(line(r))

    warm_x = paired_ratio(loads['book'][0], loads['warm'][0])
    cold_x = paired_ratio(loads['cold'][0], loads['book'][0])
    targets += [('warm load at least 50x faster than the book', f'{warm_x:.0f}x', warm_x >= 50),
                ('cold load no slower than the book', f'{cold_x:.2f}x the book', cold_x <= 1.0),
                ('import at most 10% more than the fastai modules it needs', f'{imp_ratio:.2f}x', imp_ratio <= 1.10),
                ('peak memory of (c) no more than (a)', f"{mb(peaks['package']['peak_kb'])} vs {mb(peaks['book']['peak_kb'])}",
                 peaks['package']['peak_kb'] <= peaks['book']['peak_kb'])]
    sample = 'bundled sample' in data_desc
    print(f"\nTargets{' (stated for the full 4-and-8 pair: on the sample they are only indicative)' if sample else ''}:")
    for what, got, ok in targets: print(f"  [{'met' if ok else 'NOT MET'}] {what}: {got}")
    print(f"\nfastai modules the package imports: {', '.join(mods)}")
    print(f"Ratios are medians of per-round ratios; the whole run took {time.perf_counter()-t_start:.0f} s.")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--path', type=Path, help='folder holding the four MNIST IDX files (default: the bundled sample)')
    p.add_argument('--pair', type=int, nargs=2, default=[4, 8], help='the two digits (default: 4 8)')
    p.add_argument('--repeats', type=int, default=3, help='runs of each path; each figure is their median (at least 3)')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--seed', type=int, default=0, help='seed of the split, the initial weights and the shuffling')
    p.add_argument('--threads', type=int, default=1,
                   help="torch's intra-op threads in every process (default 1: on a shared or busy machine, two or more "
                        "threads wait on each other and the figures swing tenfold; 0: torch's own choice)")
    p.add_argument('--child', choices=('book', 'floor', 'package'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 3: p.error(f"--repeats must be at least 3 (each figure is a median), got {args.repeats}")
    return args


if __name__ == '__main__':
    args = parse()
    if args.child: run_child(args.child, args)
    else: main(args)

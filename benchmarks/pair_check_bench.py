"""What the pair check costs, in one run, against its targets:

(a) time per image on one core (the process pinned to one CPU, PyTorch on one thread): `check.in_pair(x)` on a batch
    of 1,000 testing images, and on one image at a time (the page's case), against the model's own forward pass;
    target: at most 1 ms per image;
(b) model file size: `learn.export('m.safetensors')` with the check and without it; target: at most 100 kB more;
(c) training time: `fastai-binary-digits train` with the check (the default) and with `--no-check`, each in a new
    process, taking turns, `--repeats` times; target: at most 15 s more on the bundled sample, at most 60 s more on the
    full set (`--path`) on a two-core machine (`--cores 2` pins the processes to two cores of a larger one).

Every time is the median of its runs; the extra time of (c) is the median of the differences within each round, so a
machine slowing down during the run moves both sides alike; (c) also gives the extra CPU time (user and system) of the
processes, which a machine shared with other work inflates less than the wall-clock time.

    python benchmarks/pair_check_bench.py                         # the bundled sample
    python benchmarks/pair_check_bench.py --path /path/to/mnist   # and the full set (the four IDX files or mnist_png)
"""
from __future__ import annotations
import argparse, os, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIR = (4, 8)


def median_time(f, repeats:int) -> float:
    "Median seconds of `f()` over `repeats` runs, after one warm-up"
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_image(learn, repeats:int):
    "(a): milliseconds per image of the check and of the model, in a batch of 1,000 and one image at a time"
    import torch
    from fastai_binary_digits.data import images_to_x
    from fastai_binary_digits.mnist import load_digits
    x = images_to_x(torch.cat([ims for ims, _ in load_digits(range(10), 'testing', sample=True).values()])[:1000])
    check, model = learn.pair_check, learn.model.eval()
    def forward(x):
        with torch.inference_mode(): model(x)
    res = {}
    for name, f in (('check', check.in_pair), ('model', forward)):
        batch = median_time(lambda: f(x), repeats)/len(x)
        one = median_time(lambda: [f(x[i:i+1]) for i in range(100)], max(1, repeats//5))/100
        res[name] = batch*1e3, one*1e3
    print(f"(a) one core: the check takes {res['check'][0]:.4f} ms per image in a batch of 1,000 and "
          f"{res['check'][1]:.3f} ms for one image alone (the model: {res['model'][0]:.4f} and {res['model'][1]:.3f} ms); "
          f"target at most 1 ms: {'met' if max(res['check']) <= 1 else 'MISSED'}")


def file_size(learn, folder:Path):
    "(b): bytes the check adds to the safe model file"
    check = learn.pair_check
    learn.export(folder/'checked.safetensors')
    learn.pair_check = None
    try: learn.export(folder/'plain.safetensors')
    finally: learn.pair_check = check
    sizes = [(folder/f'{n}.safetensors').stat().st_size for n in ('checked', 'plain')]
    added = (sizes[0] - sizes[1])/1e3
    print(f"(b) the safe model file: {sizes[1]/1e3:.1f} kB without the check, {sizes[0]/1e3:.1f} kB with it: "
          f"{added:.1f} kB more; target at most 100 kB: {'met' if added <= 100 else 'MISSED'}")


def cpu_seconds() -> float:
    "CPU seconds (user and system) of this process's finished children"
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def train_seconds(source:list, folder:Path, no_check:bool) -> tuple:
    "Wall and CPU seconds of `fastai-binary-digits train` (4 vs 8, seeded) in a new process, with or without the check"
    args = [sys.executable, '-m', 'fastai_binary_digits', 'train', *source, '--pair', *map(str, PAIR), '--seed', '0',
            '--out', str(folder/'bench.safetensors')] + (['--no-check'] if no_check else [])
    t, cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    return time.perf_counter() - t, cpu_seconds() - cpu


def train_time(source:list, what:str, target:float, repeats:int, folder:Path):
    "(c): the extra seconds of `train` with the check, taking turns with `--no-check`"
    rounds = [(train_seconds(source, folder, False), train_seconds(source, folder, True)) for _ in range(repeats)]
    med = lambda f: statistics.median(map(f, rounds))
    extra = med(lambda r: r[0][0] - r[1][0])
    print(f"(c) `train` on {what}: {med(lambda r: r[1][0]):.1f} s with --no-check, {med(lambda r: r[0][0]):.1f} s with "
          f"the check: {extra:.1f} s more (CPU time: {med(lambda r: r[0][1] - r[1][1]):.1f} s more); target at most "
          f"{target:.0f} s: {'met' if extra <= target else 'MISSED'}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--path', help='the full MNIST (IDX files or mnist_png): also time `train` on the full set')
    p.add_argument('--repeats', type=int, default=3, help="runs of each timing of `train`; 10x as many of (a)'s")
    p.add_argument('--cores', type=int, default=None, help='pin the `train` processes to this many cores')
    args = p.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    import torch
    from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
    with tempfile.TemporaryDirectory() as d:
        os.sched_setaffinity(0, cores[:1])  # (a) and (b) on one core
        torch.set_num_threads(1)
        learn = binary_learner(BinaryDigitsDataLoaders.from_mnist(pair=PAIR, sample=True, seed=0, device='cpu'), seed=0)
        with learn.no_bar(), learn.no_logging(): learn.fit(5, 0.1)
        learn.fit_pair_check(seed=0, quiet=True)
        per_image(learn, 10*args.repeats)
        file_size(learn, Path(d))
        os.sched_setaffinity(0, cores[:args.cores] if args.cores else cores)  # (c): the processes started from here
        print(f"(c) on {len(os.sched_getaffinity(0))} core(s)")
        train_time(['--sample'], 'the bundled sample', 15, args.repeats, Path(d))
        if args.path: train_time(['--path', args.path], 'the full set', 60, args.repeats, Path(d))


if __name__ == '__main__': main()

"""How every benchmark here times: medians of rounds in which the timed functions take turns, ratios paired round by
round, seconds measured inside a fresh interpreter, and the peak memory of a child process. A machine that slows down
or speeds up during a run moves both sides of a paired ratio alike.

    from timing import in_turns, median_time, paired_ratio
    runs = in_turns({'safe': lambda: load(safe), 'pkl': lambda: load(pkl)}, rounds=20)
    runs['safe'].median, paired_ratio(runs['pkl'], runs['safe'])   # seconds; how many times slower the pickle is
    in_turns({'safe': lambda: fresh_seconds(CODE, safe)}, rounds=5, own=True)  # CODE prints the seconds it timed
    median_time(lambda: prepare_digit(pic), rounds=21)             # one function: median seconds after a warm-up

Peak memory: the child runs `with PeakMemory() as mem: work()`, then `print(mem.json())`; the parent reads it with
`child_peak([script, args...])`. On Linux the peak is reset on entering the block (/proc/self/clear_refs), so imports
done before it are not counted; elsewhere it is the process's peak since it started (`reset` False).
"""
from __future__ import annotations
import json, resource, statistics, subprocess, sys, time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ['Runs', 'timed', 'in_turns', 'median_time', 'paired_ratio', 'fresh_seconds', 'PeakMemory', 'child_peak']


@dataclass
class Runs:
    "The seconds and the result of each round of one timed function"
    times: list = field(default_factory=list)
    results: list = field(default_factory=list)

    @property
    def median(self) -> float: return statistics.median(self.times)


def timed(f:Callable, *args, **kwargs) -> tuple:
    "`(seconds, result)` of `f(*args, **kwargs)`"
    t = time.perf_counter()
    res = f(*args, **kwargs)
    return time.perf_counter() - t, res


def in_turns(fs:dict, rounds:int, warmup:bool=False, keep:bool=True, own:bool=False) -> dict:
    """Each of `fs` (name: function) run once per round, taking turns: name: `Runs` (results kept unless not `keep`).
    `own`: each function returns the seconds it measured itself (`fresh_seconds`), recorded as its time."""
    if warmup:
        for f in fs.values(): f()
    runs = {k: Runs() for k in fs}
    for _ in range(rounds):
        for k, f in fs.items():
            t, res = timed(f)
            runs[k].times.append(res if own else t)
            runs[k].results.append(res if keep else None)
    return runs


def median_time(f:Callable, rounds:int, warmup:bool=True) -> float:
    "Median seconds of `f()` over `rounds` runs, after one untimed run unless not `warmup`"
    return in_turns({'f': f}, rounds, warmup=warmup, keep=False)['f'].median


def paired_ratio(num, den) -> float:
    "The median of the ratios `num/den` taken round by round (`Runs` or lists of seconds)"
    num, den = (o.times if isinstance(o, Runs) else o for o in (num, den))
    return statistics.median(a/b for a, b in zip(num, den, strict=True))


def fresh_seconds(code:str, *args, cwd=None) -> float:
    "The seconds `code` prints on its last line, run in a fresh interpreter (`args` in `sys.argv[1:]`, warnings off)"
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code, *map(str, args)], capture_output=True, text=True,
                         cwd=cwd)
    if out.returncode: raise RuntimeError(f"a fresh interpreter failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def _status_kb(name:str) -> int|None:
    "A memory figure (kB) of this process from /proc/self/status, or None where there is none"
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(name + ':'): return int(line.split()[1])
    except OSError: pass
    return None


class PeakMemory:
    "The peak resident memory (kB) of this process while the `with` block runs: `base_kb` on entry, then `peak_kb`"
    def __enter__(self):
        try:
            with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # Linux >= 4.0: VmHWM starts again from VmRSS
            self.reset = _status_kb('VmHWM') is not None
        except OSError: self.reset = False
        self.base_kb = _status_kb('VmRSS') if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        self.peak_kb = _status_kb('VmHWM') if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def json(self) -> str: return json.dumps(dict(base_kb=self.base_kb, peak_kb=self.peak_kb, reset=self.reset))


def child_peak(argv:list, **kwargs) -> dict:
    "Run `python *argv` (its last line printed by `PeakMemory.json`): `{'base_kb', 'peak_kb', 'reset'}`"
    out = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, **kwargs)
    if out.returncode: raise RuntimeError(f"the memory run `{' '.join(map(str, argv))}` failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

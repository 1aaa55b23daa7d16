"""The notebooks in nbs/, executed top to bottom in a real kernel: every cell runs, the pictures are made, the models
reach the accuracy the notebook promises. Nothing printed is compared as text: floats differ across CPUs.
`python tests/test_notebooks.py [NAME...]` re-executes them on the bundled sample and saves them with their outputs."""
import os, re, sys, tempfile, time
from dataclasses import dataclass
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat', reason="the notebook tests need the test extras: pip install -e '.[test]'")
nbclient = pytest.importorskip('nbclient', reason="the notebook tests need the test extras: pip install -e '.[test]'")


@dataclass(frozen=True)
class Shows:
    "What a notebook must show: each accuracy it reports (fastai's tables, and the lines `printed` matches) >= `floor`"
    floor: float            # on the bundled sample and on the full set alike
    printed: str = ''       # a regex whose group 1 is an accuracy the notebook prints
    full_set: bool = False  # run on the full set when MNIST_IDX_DIR names it (else on the sample, as a reader runs it)


NOTEBOOKS = {  # name: what it must show (one line per notebook)
    '01_from_scratch.ipynb': Shows(0.90, r'after \d+ epochs: accuracy ([\d.]+)', full_set=True),
    '02_fastai_way.ipynb': Shows(0.93),
    '03_any_pair.ipynb': Shows(0.85, r'\d vs \d: accuracy ([\d.]+)'),  # the three hardest pairs
    '04_neither_digit.ipynb': Shows(0.90),
}
NBS = Path(__file__).parent.parent/'nbs'
CELL_TIMEOUT = 600         # seconds a cell may take: generous, for the 45 pairs on the full set on a slow machine
PICTURE_TAG = 'picture'    # cells tagged so must show an image (image/png output)
MAX_BYTES = 1_500_000      # a committed notebook, outputs included, stays readable on GitHub
README = (NBS.parent/'README.md').read_text()
INSTALL_LINE = '# %pip install fastai_binary_digits-0.1.0-py3-none-any.whl'  # the README's line, commented
MACHINE_PATH = re.compile(r'(?<![\w.])/(?:work|tmp|root|home|Users|usr|opt|var|private)/')  # a machine's own paths
RICHEST = ('image/png', 'text/html', 'text/markdown', 'text/plain')  # what a displayed output shows, first found
FASTAI_TABLE = re.compile(r'<table class="fastprogress">.*?</table>', re.S)


def scrub(text:str) -> str:
    "`text` without this machine's paths: `/.../site-packages/fastai/x.py` in a warning reads `.../site-packages/...`"
    text = re.sub(r'/[^\s:"\'<>]*/site-packages/', '.../site-packages/', text)
    for p in {str(NBS.parent), tempfile.gettempdir(), str(Path.home())}: text = text.replace(p, '...')
    return text


def coalesce(outputs) -> list:
    "Outputs with each run of stream outputs of one stream joined (how a kernel splits a line in chunks varies)"
    res = []
    for o in outputs:
        last = res[-1] if res else {}
        if o.get('output_type') == 'stream' and last.get('output_type') == 'stream' and last.name == o.name:
            last['text'] += o.text
        else: res.append(type(o)(o))  # a copy: the cell's own outputs are left as they are
    return res


def execute(name:str, cwd:Path):
    "The notebook `name` from nbs/, executed in a fresh `python3` kernel with `cwd` as its working folder"
    nb = nbformat.read(NBS/name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name='python3', record_timing=False,
                                     resources={'metadata': {'path': str(cwd)}})
    client.execute()  # raises `CellExecutionError`, naming the cell and the error, when a cell fails
    return nb


def code_cells(nb) -> list: return [c for c in nb.cells if c.cell_type == 'code']
def pictures(cell) -> int: return sum('image/png' in o.get('data', {}) for o in cell.get('outputs', []))


def kinds(cell) -> set:
    "What a cell shows: printed text, and the richest type of each displayed output; never stderr (warnings vary)"
    res = set()
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': res |= {o.name} - {'stderr'}
        else: res.add(next((k for k in RICHEST if k in o.get('data', {})), o.output_type))
    return res


def accuracies(nb, printed:str) -> list:
    "Each accuracy the notebook reports: the last row's `batch_accuracy` of each fastai table, and the `printed` lines"
    res = []
    for c in code_cells(nb):
        for o in c.get('outputs', []):
            text, html = o.get('text', ''), o.get('data', {}).get('text/html', '')
            if printed: res += [float(a) for a in re.findall(printed, text)]
            for table in FASTAI_TABLE.findall(html):
                head, rows = re.findall(r'<th>(.*?)</th>', table), re.findall(r'<tr>(.*?)</tr>', table)[1:]
                if rows and 'batch_accuracy' in head:
                    res.append(float(re.findall(r'<td>(.*?)</td>', rows[-1])[head.index('batch_accuracy')]))
    return res


def check_shows(nb, name:str):
    "What every run of `name` must show, committed or fresh: no error, each tagged picture, each accuracy >= the floor"
    code, shows = code_cells(nb), NOTEBOOKS[name]
    errors = [c.source.splitlines()[0] for c in code if any(o.output_type == 'error' for o in c.outputs)]
    assert not errors, f"cells of {name} that failed: {errors}"
    tagged = [c for c in code if PICTURE_TAG in c.metadata.get('tags', [])]
    assert tagged, f"{name} has no cell tagged {PICTURE_TAG!r}"
    missing = [c.source.splitlines()[0] for c in tagged if not pictures(c)]
    assert not missing, f"cells of {name} that should show a picture and did not: {missing}"
    accs = accuracies(nb, shows.printed)
    assert accs, f"{name} reports no accuracy (a fastai table's batch_accuracy, or a line matching {shows.printed!r})"
    assert min(accs) >= shows.floor, f"{name}: accuracies {accs}, below the floor {shows.floor}"
    return accs


def test_notebooks_are_listed():
    assert sorted(p.name for p in NBS.glob('*.ipynb')) == sorted(NOTEBOOKS)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_notebook(name):
    "As committed: saved from one run top to bottom (so it reads on GitHub), showing what it must, small, no paths"
    nb = nbformat.read(NBS/name, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == 'code' and first.source.splitlines()[-1] == INSTALL_LINE  # the wheel, never by name
    assert not first.outputs and INSTALL_LINE[2:] in README and 'opens with that line, commented' in README
    counts = [c.execution_count for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{name} is not saved from one run: run tests/test_notebooks.py"
    check_shows(nb, name)
    text = (NBS/name).read_text()
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)
    assert (NBS/name).stat().st_size < MAX_BYTES


@pytest.mark.long
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    "Each cell runs in a fresh kernel (on the sample, or the full set: `full_set`), showing what the committed one does"
    monkeypatch.delenv('MPLBACKEND', raising=False)  # the kernel's own inline backend, which makes the PNGs
    if not NOTEBOOKS[name].full_set: monkeypatch.delenv('MNIST_IDX_DIR', raising=False)
    nb = execute(name, tmp_path)
    check_shows(nb, name)
    committed = code_cells(nbformat.read(NBS/name, as_version=4))
    for old, new in zip(committed, code_cells(nb), strict=True):
        assert kinds(new) == kinds(old) and pictures(new) == pictures(old), \
            f"{name}: this cell shows {sorted(kinds(new))} where the committed one shows {sorted(kinds(old))} " \
            f"(outputs saved from older code? refresh with tests/test_notebooks.py):\n{new.source}"


if __name__ == '__main__':
    # Save the notebooks with their outputs, computed on the bundled sample (the committed version)
    os.environ.pop('MNIST_IDX_DIR', None)
    os.environ.pop('MPLBACKEND', None)
    for name in sys.argv[1:] or NOTEBOOKS:
        start = time.time()
        with tempfile.TemporaryDirectory() as d: nb = execute(name, Path(d))
        for c in nb.cells:  # no machine's paths in what is committed (a warning names the file that warns)
            if 'outputs' in c: c.outputs = coalesce(c.outputs)
            for o in c.get('outputs', []):
                if 'text' in o: o['text'] = scrub(o['text'])
                for k in ('text/plain', 'text/html'):
                    if k in o.get('data', {}): o['data'][k] = scrub(o['data'][k])
        nbformat.write(nb, NBS/name)
        print(f'{name}: executed in {time.time() - start:.0f} s, {(NBS/name).stat().st_size/1e3:.0f} kB')

"""The notebooks in nbs/, executed top to bottom in a real kernel: no cell fails, and the pictures are there.
`python tests/test_notebooks.py` re-executes them on the bundled sample and saves them with their outputs."""
import os, re, sys, tempfile, time
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat', reason="the notebook tests need the test extras: pip install -e '.[test]'")
nbclient = pytest.importorskip('nbclient', reason="the notebook tests need the test extras: pip install -e '.[test]'")

NBS = Path(__file__).parent.parent/'nbs'
NOTEBOOKS = ['01_from_scratch.ipynb', '02_fastai_way.ipynb', '03_any_pair.ipynb', '04_neither_digit.ipynb']
CELL_TIMEOUT = 600         # seconds a cell may take: generous, for the 45 pairs on the full set on a slow machine
PICTURE_TAG = 'picture'    # cells tagged so must show an image (image/png output)
MAX_BYTES = 1_500_000      # a committed notebook, outputs included, stays readable on GitHub
README = (NBS.parent/'README.md').read_text()
INSTALL_LINE = '# %pip install fastai_binary_digits-0.1.0-py3-none-any.whl'  # the README's line, commented
MACHINE_PATH = re.compile(r'(?<![\w.])/(?:work|tmp|root|home|Users|usr|opt|var|private)/')  # absolute paths of a machine


def scrub(text:str) -> str:
    "`text` without this machine's paths: a warning's `/.../site-packages/fastai/x.py` becomes `.../site-packages/fastai/x.py`"
    text = re.sub(r'/[^\s:"\'<>]*/site-packages/', '.../site-packages/', text)
    for p in {str(NBS.parent), tempfile.gettempdir(), str(Path.home())}: text = text.replace(p, '...')
    return text


def coalesce(outputs) -> list:
    "Outputs with each run of stream outputs of one stream joined (how a kernel splits a line in chunks varies)"
    res = []
    for o in outputs:
        if o.get('output_type') == 'stream' and res and res[-1].get('output_type') == 'stream' and res[-1].name == o.name:
            res[-1]['text'] += o.text
        else: res.append(type(o)(o))  # a copy: the cell's own outputs are left as they are
    return res


def texts(cell) -> list:
    "The text a code cell printed or displayed, scrubbed, with fastai's times (`00:02`) made alike"
    res = []
    for o in coalesce(cell.get('outputs', [])):
        for t in [o.get('text', '')] + [o.get('data', {}).get(k, '') for k in ('text/plain', 'text/html')]:
            t = ''.join(t) if isinstance(t, list) else t
            if t: res.append(re.sub(r'\b\d\d:\d\d\b', 'mm:ss', scrub(t)))
    return res


def execute(name:str, cwd:Path):
    "The notebook `name` from nbs/, executed in a fresh `python3` kernel with `cwd` as its working folder"
    nb = nbformat.read(NBS/name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name='python3', record_timing=False,
                                     resources={'metadata': {'path': str(cwd)}})
    client.execute()  # raises `CellExecutionError`, naming the cell and the error, when a cell fails
    return nb


def pictures(cell) -> int:
    return sum('image/png' in o.get('data', {}) for o in cell.get('outputs', []))


def test_notebooks_are_listed():
    assert sorted(p.name for p in NBS.glob('*.ipynb')) == NOTEBOOKS


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_notebook(name):
    "As committed: outputs saved (so they read on GitHub), the pictures among them, the install cell first, small"
    nb = nbformat.read(NBS/name, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == 'code' and first.source.splitlines()[-1] == INSTALL_LINE  # the wheel, never by name
    assert INSTALL_LINE[2:] in README and 'opens with that line, commented' in README
    text = (NBS/name).read_text()
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(c.execution_count for c in code[1:]), f"{name} is saved without its outputs: run tests/test_notebooks.py"
    assert not any(o.output_type == 'error' for c in code for o in c.outputs)
    tagged = [c for c in code if PICTURE_TAG in c.metadata.get('tags', [])]
    assert tagged and all(pictures(c) for c in tagged)
    assert (NBS/name).stat().st_size < MAX_BYTES


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    "Every cell runs without error in a fresh kernel (on the full set when MNIST_IDX_DIR is set), pictures included"
    monkeypatch.delenv('MPLBACKEND', raising=False)  # the kernel's own inline backend, which makes the PNGs
    nb = execute(name, tmp_path)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(c.execution_count for c in code)
    assert not any(o.output_type == 'error' for c in code for o in c.outputs)
    tagged = [c for c in code if PICTURE_TAG in c.metadata.get('tags', [])]
    assert tagged, f"{name} has no cell tagged {PICTURE_TAG!r}"
    missing = [c.source.splitlines()[0] for c in tagged if not pictures(c)]
    assert not missing, f"cells of {name} that should show a picture and did not: {missing}"
    if not os.environ.get('MNIST_IDX_DIR'):  # on the sample, as committed: every run prints what the committed one did
        committed = [c for c in nbformat.read(NBS/name, as_version=4).cells if c.cell_type == 'code']
        for old, new in zip(committed, code, strict=True):
            assert texts(new) == texts(old), f"{name}: this cell prints other text than its committed output " \
                                             f"(unseeded, or a timing?); refresh with tests/test_notebooks.py:\n{new.source}"


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

"""The notebooks in nbs/, executed top to bottom in a real kernel: no cell fails, and the pictures are there.
`python tests/test_notebooks.py` re-executes them on the bundled sample and saves them with their outputs."""
import os, sys, time
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat', reason="the notebook tests need the test extras: pip install -e '.[test]'")
nbclient = pytest.importorskip('nbclient', reason="the notebook tests need the test extras: pip install -e '.[test]'")

NBS = Path(__file__).parent.parent/'nbs'
NOTEBOOKS = ['01_from_scratch.ipynb', '02_fastai_way.ipynb', '03_any_pair.ipynb']
CELL_TIMEOUT = 600         # seconds a cell may take: generous, for the 45 pairs on the full set on a slow machine
PICTURE_TAG = 'picture'    # cells tagged so must show an image (image/png output)
MAX_BYTES = 1_500_000      # a committed notebook, outputs included, stays readable on GitHub


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
    assert first.cell_type == 'code' and '# %pip install fastai-binary-digits' in first.source
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


if __name__ == '__main__':
    # Save the notebooks with their outputs, computed on the bundled sample (the committed version)
    import tempfile
    os.environ.pop('MNIST_IDX_DIR', None)
    os.environ.pop('MPLBACKEND', None)
    for name in sys.argv[1:] or NOTEBOOKS:
        start = time.time()
        with tempfile.TemporaryDirectory() as d: nb = execute(name, Path(d))
        nbformat.write(nb, NBS/name)
        print(f'{name}: executed in {time.time() - start:.0f} s, {(NBS/name).stat().st_size/1e3:.0f} kB')

"The README's promises: CI runs its test command, and its Python example works as written"
import os, re, shlex, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT/'README.md').read_text()


def _blocks(lang): return re.findall(rf'```{lang}\n(.*?)```', README, re.S)


def test_ci_runs_the_readme_test_command():
    commands = [line for b in _blocks('bash') for line in b.splitlines() if line and not line.startswith('#')]
    test_cmd = next(c for c in commands if 'pytest' in c)
    assert test_cmd in (ROOT/'.ci'/'run').read_text()


def test_quick_start_is_two_commands():
    quick = README.split('## Quick start', 1)[1].split('\n## ', 1)[0]
    commands = [l for b in re.findall(r'```bash\n(.*?)```', quick, re.S) for l in b.splitlines() if l and l[0] != '#']
    assert len(commands) == 2 and 'train --sample' in commands[0] and 'pytest' in commands[1]


def test_python_example_runs_as_written(sample_png, tmp_path):
    "The example at the top of the README, with fastai's MNIST staged in FASTAI_HOME (no download)"
    example = _blocks('python')[0]
    assert 'from_mnist(pair=(4, 8))' in example and 'learn.fit(20, 0.1)' in example
    home = tmp_path/'fastai_home'
    shutil.copytree(sample_png, home/'data'/'mnist_png', ignore=shutil.ignore_patterns('.fastai_binary_digits'))
    env = dict(os.environ, FASTAI_HOME=str(home), https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9')
    code = example + "\nprint('ACCURACY', float(learn.recorder.values[-1][2]))\nprint('VOCAB', list(dls.vocab))\n"
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'VOCAB [4, 8]' in out.stdout
    acc = float(re.search(r'ACCURACY ([0-9.]+)', out.stdout).group(1))
    assert acc > 0.95
    assert 'batch_accuracy' in out.stdout  # fastai's table was printed


# ---------------------------------------------------------------------------------------------------------------
# Issue 13: the install lines work from a fresh clone

def _pip_installs(text:str) -> list:
    "The requirements of every `pip install ...` in `text` (in code blocks or inline code), options left out"
    reqs = []
    for cmd in re.findall(r'pip install((?: +(?:"[^"\n]*"|[^\s`&;"\'),]+))+)', text):  # quoted words, or up to a quote
        words, skip = shlex.split(cmd), False
        for w in words:
            if skip: skip = False
            elif w in ('--index-url', '--extra-index-url', '-i', '--python', '-w'): skip = True
            elif not w.startswith('-'): reqs.append(w)
    return reqs


def test_nothing_installs_the_package_by_name_from_the_index():
    "It is not on PyPI: the README, the notebooks and the package's own messages install from the repository or a wheel"
    sources = {'README.md': README, **{p.name: p.read_text() for p in (ROOT/'nbs').glob('*.ipynb')},
               **{f'{p.parent.name}/{p.name}': p.read_text() for p in (ROOT/'fastai_binary_digits').glob('*.py')}}
    seen = 0
    for where, text in sources.items():
        for req in _pip_installs(text.replace('\\n', '\n').replace('\\"', '"')):
            seen += 1
            local = req.startswith('.') or req.endswith('.whl') or '/' in req
            name = re.split(r'[\[<>=!~ ]', req, maxsplit=1)[0].lower().replace('_', '-')
            assert local or name != 'fastai-binary-digits', f'{where}: pip install {req}'
    assert seen >= 6
    assert 'pip wheel --no-deps -w dist .' in README  # builds the wheel with nothing but pip
    assert 'python -m build' not in README or 'pip install build' in README  # `build` is a package of its own


def test_the_first_quick_start_command_leaves_no_untracked_file(tmp_path):
    "What the first command writes in the clone (its venv, pip's metadata, `train`'s default --out) is ignored by git"
    from fastai_binary_digits.cli import _parser
    if shutil.which('git') is None or subprocess.run(['git', 'rev-parse'], cwd=ROOT, capture_output=True).returncode:
        import pytest
        pytest.skip('not a git checkout')
    quick = README.split('## Quick start', 1)[1].split('\n## ', 1)[0]
    first = next(l for b in re.findall(r'```bash\n(.*?)```', quick, re.S) for l in b.splitlines() if l and l[0] != '#')
    train = shlex.split(first.split('fastai-binary-digits ', 1)[1])
    args = _parser().parse_args(train)
    assert args.command == 'train' and args.report is None
    written = [args.out, '.venv/', 'fastai_binary_digits.egg-info/', 'model.pkl', 'model.safetensors']
    for fn in written:
        res = subprocess.run(['git', 'check-ignore', '-q', '--no-index', fn], cwd=ROOT)
        assert res.returncode == 0, f'{fn} (written by {first!r}) is not ignored by .gitignore'


def test_readme_says_what_the_package_needs_and_how_to_get_the_cpu_build():
    import tomllib
    deps = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['dependencies']
    installing = README.split('## Installing', 1)[1].split('\n## ', 1)[0]
    for dep in deps: assert f'`{dep}`' in installing or f'`{dep}`' in installing.replace(' ', ''), dep
    cpu = [l for b in _blocks('bash') for l in b.splitlines() if 'download.pytorch.org/whl/cpu' in l]
    assert cpu, 'no command installs the CPU build of PyTorch'
    line = cpu[0]
    assert line.index('pip install torch --index-url https://download.pytorch.org/whl/cpu') < line.index('pip install -e .')

"The README's promises: CI runs its test command, and its Python example works as written"
import os, re, shutil, subprocess, sys
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

"The package's surface: what `from fastai_binary_digits import *` gives a notebook"
import subprocess, sys

import fastai_binary_digits


def test_star_import_gives_the_public_api_only():
    ns = {}
    exec('from fastai_binary_digits import *', ns)
    names = set(ns) - {'__builtins__'}
    assert names == set(fastai_binary_digits.__all__)
    assert not [n for n in names if n.startswith('_')]
    assert {'BinaryDigitsDataLoaders', 'binary_learner', 'mnist_loss', 'log_loss', 'batch_accuracy', 'linear_model',
            'simple_net', 'deep_net', 'cnn', 'plot_weights'} <= names
    assert not names & {'torch', 'np', 'nn', 'Path', 'Learner', 'SGD', 'os', 'random'}  # no leaked imports


def test_a_bare_star_import_brings_fastais_bars_and_schedules():
    "In a fresh process: fastai's progress bar and table, `fit_one_cycle` and `lr_find`, with nothing else imported"
    code = ("from fastai_binary_digits import *\n"
            "dls = BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True)\n"
            "learn = binary_learner(dls)\n"
            "print(sorted(type(cb).__name__ for cb in learn.cbs))\n"
            "print(hasattr(learn, 'fit_one_cycle'), hasattr(learn, 'lr_find'))\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert 'ProgressCallback' in out and 'Recorder' in out and 'True True' in out

"""Distributed training with fastai's own engine: two CPU processes started by `torchrun` (gloo, loopback only) on the
bundled sample, checked against one process of the same seed"""
import json, os, socket, subprocess, sys, time, warnings
from collections import Counter
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from fastai.learner import load_learner

from fastai_binary_digits import BinaryDigitsDataLoaders
from distributed_run import N_ODD, row_keys

pytestmark = [
    pytest.mark.skipif(find_spec('accelerate') is None, reason="fastai's distributed training needs Hugging Face "
                       "Accelerate: pip install accelerate"),
    pytest.mark.filterwarnings("ignore:load_learner` uses Python's insecure pickle"),  # files these tests wrote
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                       reason="this PyTorch build has no torch.distributed with the gloo backend"),
]

SCRIPT = Path(__file__).parent/'distributed_run.py'
SEED, EPOCHS = 42, 3
BS = 64      # per process: two processes of 64 take the same 128 images per step as one process of 128
WORLD = 2
LOOPBACK = {'linux': 'lo', 'darwin': 'lo0'}.get(sys.platform)  # gloo's interface: never leave this machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


ABORT_AT_EXIT = 'terminate called without an active exception'  # torch's gloo, in C++ destructors after Python's exit


def _launch(args, check:bool=True, timeout:int=300, tries:int=2):
    """Run `args` with loopback-only networking; return its completed process (failing the test if `check` and it
    failed). A run that a process's C++ teardown aborted, after all its Python had run (about one in ten on this
    CPU build of torch, with no Python frame left), is run again once, with a warning: never twice"""
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'PYTHONUNBUFFERED': '1'}
    if LOOPBACK: env['GLOO_SOCKET_IFNAME'] = LOOPBACK
    t = time.perf_counter()
    p = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=timeout, env=env)
    p.wall, p.log = time.perf_counter() - t, p.stdout + p.stderr
    if check and p.returncode and ABORT_AT_EXIT in p.log and tries > 1:
        warnings.warn(f"a process of {' '.join(p.args)} was aborted by torch at exit ({ABORT_AT_EXIT!r}): run again")
        return _launch(args, check, timeout, tries - 1)
    if check and p.returncode: pytest.fail(f"{' '.join(p.args)} failed ({p.returncode}):\n{p.log[-4000:]}")
    return p


def _torchrun(*args) -> list:
    "The command that starts `WORLD` processes of `args` (a script or `-m module`, and its arguments) on this machine"
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', WORLD, '--master_addr', '127.0.0.1',
            '--master_port', _free_port(), *args]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The two-process run (rank 0, rank 1) and the one-process run of the same seed and epochs, with their wall times"
    out = tmp_path_factory.mktemp('distributed')
    opts = ['--epochs', EPOCHS, '--seed', SEED]
    two = _launch(_torchrun(SCRIPT, out/'two', '--bs', BS, *opts))
    one = _launch([sys.executable, SCRIPT, out/'one', '--bs', WORLD*BS, *opts])
    res = dict(out=out, two=[json.loads((out/'two'/f'rank{r}.json').read_text()) for r in range(WORLD)],
               one=json.loads((out/'one'/'rank0.json').read_text()), two_log=two.log)
    print(f"\n{WORLD} processes: wall {two.wall:.1f} s, fit {res['two'][0]['fit_s']:.2f} s, "
          f"accuracy {res['two'][0]['values'][-1][-1]:.4f}\n1 process:   wall {one.wall:.1f} s, "
          f"fit {res['one']['fit_s']:.2f} s, accuracy {res['one']['values'][-1][-1]:.4f}")
    return res


@pytest.fixture(scope='module')
def dls():
    "The same loaders the runs built: same seed, same split"
    return BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=SEED)


def _gathered_order(n:int, bs:int, world:int=WORLD) -> list:
    """The order in which fastai's `DistributedDL` gathers an unshuffled loader of `n` items: rank r takes the r-th
    share of the indices (padded by repeating the first ones), and batch i of every rank is gathered in rank order;
    `to_detach` then drops the padding, which sits at the end of the last batch"""
    n_pad = -(-n//world)*world
    idxs = (list(range(n))*2)[:n_pad]
    shares = [idxs[r*n_pad//world:(r+1)*n_pad//world] for r in range(world)]
    return [i for b in range(0, n_pad//world, bs) for s in shares for i in s[b:b+bs]][:n]


def test_each_training_image_once_per_epoch(runs, dls):
    keys = row_keys(dls.train.dataset.x)
    assert len(set(keys)) == len(keys)  # no two sample images alike, so a hash names one image
    r0, r1 = (r['seen'] for r in runs['two'])
    assert len(r0) == len(r1) == EPOCHS
    for e in range(EPOCHS):
        assert len(r0[e]) == len(r1[e]) == len(keys)//WORLD, f"epoch {e}: each rank trains on half the images"
        assert Counter(r0[e] + r1[e]) == Counter(keys), f"epoch {e}: not every image seen exactly once"
    assert r0[0] != r0[1], "the epochs are shuffled differently"


def test_valid_accuracy_matches_one_process(runs):
    two, one = runs['two'][0]['values'], runs['one']['values']
    assert len(two) == len(one) == EPOCHS
    assert abs(two[-1][-1] - one[-1][-1]) <= 0.005 + 1e-6, f"2 processes: {two[-1][-1]:.4f}, 1 process: {one[-1][-1]:.4f}"
    assert abs(two[-1][1] - one[-1][1]) < 0.01  # validation loss


def test_metrics_gathered_across_ranks(runs, dls):
    r0, r1 = runs['two']
    assert r0['world'] == r1['world'] == WORLD and (r0['rank'], r1['rank']) == (0, 1)
    assert r0['values'] == r1['values'], "every rank holds the gathered metrics"
    assert r0['weights'] == r1['weights'], "DDP keeps the ranks' weights identical"
    preds, targs = torch.tensor(r0['preds']), torch.tensor(r0['targs'])
    n = len(dls.valid.dataset)
    assert len(preds) == n and Counter(targs.tolist()) == Counter(dls.valid.dataset.y.view(-1).tolist())
    # the gathered accuracy is that of all the validation images, each counted once
    assert ((preds > 0.5).float() == targs).float().mean().item() == pytest.approx(r0['values'][-1][-1], abs=1e-6)


def test_only_rank0_logs_and_exports(runs):
    assert runs['two_log'].count('train_loss') == 1, "one table of results, from rank 0"
    assert sorted(p.name for p in (runs['out']/'two').iterdir()) == ['export.pkl', 'rank0.json', 'rank1.json']


def test_exported_model_predicts_as_trained(runs, dls):
    "Rank 0's export gives the gathered predictions, in `DistributedDL`'s order, unpadded for a loader of odd size"
    r0 = runs['two'][0]
    learn = load_learner(runs['out']/'two'/'export.pkl')
    assert [p.sum().item() for p in learn.model.parameters()] == pytest.approx(r0['weights'], abs=1e-5)
    preds, targs = learn.get_preds(dl=dls.valid)
    preds, targs = preds.view(-1), targs.view(-1)
    order = _gathered_order(len(preds), BS)
    assert torch.allclose(preds[order], torch.tensor(r0['preds']), atol=1e-5)
    assert targs[order].tolist() == r0['targs']
    odd = _gathered_order(N_ODD, BS)
    assert len(r0['odd_preds']) == N_ODD
    assert torch.allclose(preds[odd], torch.tensor(r0['odd_preds']), atol=1e-5)
    assert targs[odd].tolist() == r0['odd_targs']
    assert ((preds > 0.5).float() == targs).float().mean().item() == pytest.approx(r0['values'][-1][-1], abs=1e-6)
    assert int(targs[0]) == 0 and int(targs[-1]) == 1  # the validation set holds the 4s first, then the 8s
    for i in (0, len(preds) - 1):
        digit, label, prob = learn.predict(dls.valid.dataset.x[i])
        assert float(prob) == pytest.approx(preds[i].item(), abs=0.01)  # `predict` goes through a uint8 image
        assert int(label) == int(preds[i] > 0.5) and digit == dls.vocab[int(label)]


# ---------------------------------------------------------------------------------------------------------------
# The command line: `torchrun --nproc_per_node 2 -m fastai_binary_digits train ...`

def _torchrun_cli(*args) -> list:
    return _torchrun('-m', 'fastai_binary_digits', 'train', '--sample', '--pair', 4, 8, *args)


def test_cli_trains_on_two_processes(tmp_path, dls):
    model, report = tmp_path/'model.pkl', tmp_path/'report'
    log = _launch(_torchrun_cli('--epochs', EPOCHS, '--seed', SEED, '--bs', BS, '--out', model, '--report', report)).log
    for line in ('Training linear on 4 vs 8', 'train_loss', 'Exported the learner'): assert log.count(line) == 1, line
    assert sorted(p.name for p in report.iterdir()) == ['confusion_matrix.png', 'loss.png', 'top_losses.png', 'weights.png']
    learn = load_learner(model)
    preds, targs = learn.get_preds(dl=dls.valid)
    assert ((preds > 0.5).float() == targs).float().mean() > 0.95


def test_cli_without_seed_fails_clearly(tmp_path):
    "Without `--seed`, each process makes its own random validation split: they must not train on different images"
    p = _launch(_torchrun_cli('--epochs', '1', '--out', tmp_path/'model.pkl'), check=False)
    assert p.returncode != 0 and not (tmp_path/'model.pkl').exists()
    assert 'error: The processes hold different training or validation images' in p.stderr
    assert '--seed N' in p.stderr


def test_plain_distrib_ctx_on_a_binary_learner(tmp_path):
    "A script that uses fastai's `learn.distrib_ctx(cpu=True)` directly, without importing our distributed module"
    script = tmp_path/'plain.py'
    script.write_text(
        "import atexit, sys\n"
        "from pathlib import Path\n"
        "import torch\n"
        "from fastai.torch_core import rank_distrib\n"
        "out = Path(sys.argv[1])\n"
        "def report_group():  # registered first, so it runs last at exit: after the package's own cleanup\n"
        "    (out/f'exit{rank_distrib()}.txt').write_text(str(torch.distributed.is_initialized()))\n"
        "atexit.register(report_group)\n"
        "from fastai_binary_digits import *\n"
        "dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=42, bs=64)\n"
        "learn = binary_learner(dls, seed=42)\n"
        "with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(cpu=True): learn.fit(1, 0.1)\n"
        "assert 'fastai_binary_digits.distributed' in sys.modules  # the gloo fix came with `distrib_ctx`\n"
        "assert torch.distributed.is_initialized()  # fastai leaves Accelerate's process group up after the context\n"
        "(out/f'rank{rank_distrib()}.txt').write_text(str(float(learn.recorder.values[-1][2])))\n")
    _launch(_torchrun(script, tmp_path))
    accs = [(tmp_path/f'rank{r}.txt').read_text() for r in range(WORLD)]  # a file each: torchrun's forwarded output
    assert accs[0] == accs[1] and float(accs[0]) > 0.9                     # can drop or merge lines
    # destroyed before interpreter shutdown, where gloo's threads could otherwise abort a run that trained well
    assert [(tmp_path/f'exit{r}.txt').read_text() for r in range(WORLD)] == ['False']*WORLD

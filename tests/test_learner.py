"Loss, metric, models and `binary_learner` with real images and real fastai runs"
import json, re, subprocess, sys, textwrap

import matplotlib
matplotlib.use('Agg')
import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image

from fastai.callback.all import (CSVLogger, EarlyStoppingCallback, GradientAccumulation, SaveModelCallback,
                                 ShowGraphCallback)
from fastai.interpret import ClassificationInterpretation
from fastai.learner import load_learner
from fastai.losses import BCEWithLogitsLossFlat
from fastai.optimizer import SGD
from fastai.torch_core import TensorCategory, TensorImageBW
from fastai_binary_digits import (BinaryDigitsDataLoaders, BinaryLearner, batch_accuracy, binary_learner, cnn,
                                  deep_net, linear_model, log_loss, mnist_loss, plot_weights, simple_net)
from fastai_binary_digits.checks import BinaryDigitsError


def book_mnist_loss(predictions, targets):
    "The book's loss, verbatim"
    predictions = predictions.sigmoid()
    return torch.where(targets==1, 1-predictions, predictions).mean()


# ---------------------------------------------------------------------------------------------------------------
# Loss and metric

def test_mnist_loss_is_the_books():
    torch.manual_seed(0)
    preds, targs = torch.randn(50, 1), torch.randint(0, 2, (50, 1)).float()
    assert torch.allclose(mnist_loss(preds, targs), book_mnist_loss(preds, targs))
    assert torch.allclose(mnist_loss(preds, targs.view(-1)), book_mnist_loss(preds, targs))  # (n,) targets too
    assert torch.allclose(mnist_loss(preds.view(-1), targs), book_mnist_loss(preds, targs))


def test_n_against_n1_never_broadcasts():
    "The chapter's pitfall: (n, 1) predictions against (n,) targets broadcast to (n, n) and accuracy sticks near 50%"
    preds = torch.tensor([[5.], [-5.], [5.], [-5.]])
    targs = torch.tensor([1., 0., 1., 0.])
    assert batch_accuracy(preds, targs) == 1.0                          # not the 0.5 of the broadcast (n, n) comparison
    assert ((preds.sigmoid() > 0.5) == targs).float().mean() == 0.5     # what the pitfall gives
    assert mnist_loss(preds, targs) < 0.01


@pytest.mark.parametrize('f', [mnist_loss, log_loss, batch_accuracy])
def test_wrong_shapes_are_clear_errors(f):
    with pytest.raises(ValueError, match=r'one value per image each'): f(torch.zeros(4, 1), torch.zeros(5))
    with pytest.raises(ValueError, match=r'one value per image each'): f(torch.zeros(4, 1), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r'one output per image'): f(torch.zeros(4, 2), torch.zeros(4))


def test_loss_reduction_activation_and_decodes():
    preds, targs = torch.tensor([[2.], [-1.], [0.5]]), torch.tensor([[1.], [1.], [0.]])
    per_item = torch.where(targs.view(-1) == 1, 1-preds.view(-1).sigmoid(), preds.view(-1).sigmoid())
    mnist_loss.reduction = 'none'
    try: assert torch.allclose(mnist_loss(preds, targs), per_item)
    finally: mnist_loss.reduction = 'mean'
    assert torch.allclose(mnist_loss.activation(preds), preds.sigmoid())
    assert mnist_loss.decodes(preds.sigmoid()).view(-1).tolist() == [1., 0., 1.]


def test_log_loss_formula_and_clamping():
    preds, targs = torch.tensor([[0.3], [-2.], [1000.], [-1000.]]), torch.tensor([[1.], [0.], [0.], [1.]])
    p = preds.view(-1).sigmoid().clamp(1e-7, 1-1e-7); y = targs.view(-1)
    assert torch.allclose(log_loss(preds, targs), (-y*p.log() - (1-y)*(1-p).log()).mean())
    assert torch.isfinite(log_loss(preds, targs))  # log(0) avoided for confident wrong answers


def test_typed_tensors_work_outside_fit():
    preds = TensorImageBW(torch.tensor([[2.], [-3.]]))
    targs = TensorCategory(torch.tensor([1, 0]))
    assert torch.allclose(mnist_loss(preds, targs), book_mnist_loss(torch.tensor([[2.], [-3.]]), torch.tensor([[1.], [0.]])))
    assert batch_accuracy(preds, targs) == 1.0


def test_batch_accuracy():
    preds = torch.tensor([[1.], [-1.], [0.2], [-0.2]])
    assert batch_accuracy(preds, torch.tensor([[1.], [0.], [0.], [0.]])) == 0.75


# ---------------------------------------------------------------------------------------------------------------
# Models

@pytest.mark.parametrize('f,n_params', [(linear_model, 785), (simple_net, 784*30+30+31),
                                        (deep_net, 784*256+256 + 256*128+128 + 128*64+64 + 64*32+32 + 33), (cnn, None)])
def test_models_map_digits_to_one_output(f, n_params):
    m = f()
    assert m(torch.rand(3, 784)).shape == (3, 1)
    if n_params: assert sum(p.numel() for p in m.parameters()) == n_params
    assert f() is not m  # a fresh model each call


def test_the_cnn_is_fastais_conv_layers():
    from fastai.layers import ConvLayer
    convs = [m for m in cnn() if isinstance(m, ConvLayer)]
    assert [(c[0].in_channels, c[0].out_channels, c[0].stride) for c in convs] == [
        (1, 8, (2, 2)), (8, 16, (2, 2)), (16, 32, (2, 2)), (32, 64, (2, 2))]


# ---------------------------------------------------------------------------------------------------------------
# binary_learner

def test_defaults_and_training_on_real_digits(sample_dls):
    learn = binary_learner(sample_dls, seed=0)
    assert isinstance(learn, BinaryLearner) and isinstance(learn.model, nn.Linear)
    assert learn.loss_func is mnist_loss and learn.opt_func is SGD and learn.metrics[0].name == 'batch_accuracy'
    with learn.no_bar(): learn.fit(5, 0.1)
    assert len(learn.recorder.values) == 5
    assert learn.recorder.values[-1][2] >= 0.95                      # 4 vs 8 on the sample, linear, 5 epochs
    assert learn.recorder.values[-1][0] < learn.recorder.values[0][0]


@pytest.mark.parametrize('arch,kind', [('simple', nn.Sequential), ('deep_net', nn.Sequential), (cnn, nn.Sequential),
                                       (lambda: nn.Linear(784, 1), nn.Linear)])
def test_arch_by_name_function_or_module(sample_dls, arch, kind):
    learn = binary_learner(sample_dls, arch=arch)
    assert isinstance(learn.model, kind)
    module = nn.Linear(784, 1)
    assert binary_learner(sample_dls, arch=module).model is module


def test_learner_arguments_pass_through(sample_dls, tmp_path):
    learn = binary_learner(sample_dls, path=tmp_path, model_dir='weights', wd=0.01, lr=0.5)
    assert learn.path == tmp_path and learn.model_dir == 'weights' and learn.wd == 0.01 and learn.lr == 0.5


def test_same_seed_same_weights_same_table(sample_dls):
    def run(seed):
        learn = binary_learner(sample_dls, seed=seed)
        w0 = learn.model.weight.detach().clone()
        with learn.no_bar(), learn.no_logging(): learn.fit(3, 0.1)
        return w0, learn.model.weight.detach().clone(), [list(map(float, v)) for v in learn.recorder.values]
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])


def test_unknown_arch(sample_dls):
    with pytest.raises(ValueError, match=r"Unknown `arch` 'resnet'.*'linear', 'simple', 'deep', 'cnn'"):
        binary_learner(sample_dls, arch='resnet')
    with pytest.raises(TypeError, match=r'`arch` must be a name'): binary_learner(sample_dls, arch=3)
    with pytest.raises(TypeError, match=r'returned a str'): binary_learner(sample_dls, arch=lambda: 'model')


def test_model_with_the_wrong_output(sample_dls):
    with pytest.raises(ValueError, match=r'one output per image, shape \(bs, 1\).*returned \(2, 2\)'):
        binary_learner(sample_dls, arch=nn.Linear(784, 2))
    with pytest.raises(ValueError, match=r'failed on a batch of shape \(2, 784\)'):
        binary_learner(sample_dls, arch=nn.Linear(100, 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU: the missing-device error cannot happen')
def test_gpu_that_is_not_there(sample_dls):
    with pytest.raises(ValueError, match=r'asked for a GPU'): binary_learner(sample_dls, device='cuda')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU to check training there')
def test_training_on_the_gpu():
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0, device='cpu')
    learn = binary_learner(dls, device='cuda')
    with learn.no_bar(): learn.fit(1, 0.1)
    assert next(learn.model.parameters()).is_cuda and dls.train.dataset.x.is_cuda


def test_log_loss_and_fastai_bce_as_losses(sample_dls):
    for loss in (log_loss, BCEWithLogitsLossFlat()):
        learn = binary_learner(sample_dls, loss_func=loss, seed=0)
        with learn.no_bar(), learn.no_logging(): learn.fit(3, 0.1)
        assert learn.recorder.values[-1][2] > 0.9
        probs, targs, decoded = learn.get_preds(with_decoded=True)
        assert probs.min() >= 0 and probs.max() <= 1 and set(decoded.view(-1).tolist()) <= {0, 1, True, False}


# ---------------------------------------------------------------------------------------------------------------
# Composing with fastai

@pytest.fixture(scope='module')
def trained(sample_dls, tmp_path_factory):
    learn = binary_learner(sample_dls, seed=0, path=tmp_path_factory.mktemp('learn'))
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 0.1)
    return learn


def test_callbacks(sample_dls, tmp_path):
    learn = binary_learner(sample_dls, seed=0, path=tmp_path)
    cbs = [EarlyStoppingCallback(monitor='valid_loss', patience=1, min_delta=10.),   # nothing improves by 10: stops
           SaveModelCallback(monitor='batch_accuracy', fname='best'), CSVLogger(fname='log.csv'),
           GradientAccumulation(n_acc=512), ShowGraphCallback()]
    learn.fit(10, 0.1, cbs=cbs)                                          # ShowGraphCallback draws on fastai's bar
    assert len(learn.recorder.values) == 2                               # stopped early, after patience 1
    assert (tmp_path/'models'/'best.pth').exists()
    rows = (tmp_path/'log.csv').read_text().splitlines()
    assert rows[0].startswith('epoch,train_loss,valid_loss,batch_accuracy') and len(rows) == 3
    assert not any(isinstance(cb, SaveModelCallback) for cb in learn.cbs)  # fit's cbs are removed after fit


def test_callback_events_reach_a_custom_callback(sample_dls):
    from fastai.callback.core import Callback, CancelBatchException
    calls = []
    class Spy(Callback):
        order = 50
        def before_fit(self): calls.append('before_fit')
        def before_batch(self):
            calls.append('before_batch')
            if self.training and self.iter == 0: raise CancelBatchException()
        def after_cancel_batch(self): calls.append('after_cancel_batch')
        def after_epoch(self): calls.append('after_epoch')
    learn = binary_learner(sample_dls, cbs=Spy())
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 0.1)
    assert calls[0] == 'before_fit' and calls.count('after_epoch') == 2 and calls.count('after_cancel_batch') == 2
    assert calls.count('before_batch') == 2*(len(sample_dls.train) + len(sample_dls.valid))


def test_lr_find_and_fit_one_cycle(sample_dls):
    learn = binary_learner(sample_dls, seed=0)
    with learn.no_bar(), learn.no_logging(): sug = learn.lr_find(show_plot=False)
    assert 1e-7 < sug.valley < 10
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 0.5)
    lrs = learn.recorder.lrs
    assert max(lrs) == pytest.approx(0.5, rel=0.05) and lrs[0] < 0.1 and lrs[-1] < 0.01


def test_predict_on_file_pil_and_tensor(trained, sample_png):
    fn = sorted((sample_png/'testing'/'8').iterdir())[3]
    for item in (fn, Image.open(fn), torch.tensor(np.asarray(Image.open(fn)))):
        digit, label, prob = trained.predict(item)
        assert digit in (4, 8) and int(label) == (digit == 8) and 0 <= float(prob) <= 1
        assert (float(prob) > 0.5) == (digit == 8)                          # prob is the probability of pair[1]
    correct = sum(trained.predict(f)[0] == 8 for f in sorted((sample_png/'testing'/'8').iterdir())[:30])
    assert correct >= 27


def test_get_preds_show_results_and_interpretation(trained):
    probs, targs, decoded, losses = trained.get_preds(with_decoded=True, with_loss=True)
    n = len(trained.dls.valid.dataset)
    assert probs.shape == (n, 1) and decoded.shape == (n, 1) and losses.shape == (n,)
    assert torch.equal(decoded, (probs > 0.5).float())
    trained.show_results(max_n=4)
    interp = ClassificationInterpretation.from_learner(trained)
    cm = interp.confusion_matrix()
    t, d = targs.view(-1).long(), decoded.view(-1).long()
    assert cm.tolist() == [[int(((t == i) & (d == j)).sum()) for j in (0, 1)] for i in (0, 1)]
    interp.plot_confusion_matrix()
    interp.plot_top_losses(4)
    import matplotlib.pyplot as plt
    fig = plt.gcf()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and all(len(t.split('/')) == 3 for t in titles)   # actual/prediction/its probability
    top, _ = interp.top_losses(4)
    assert torch.allclose(top, losses.topk(4).values)


def test_export_then_load_learner_in_a_new_process(trained, sample_png, tmp_path):
    fn = tmp_path/'model.pkl'
    trained.export(fn)
    assert fn.exists() and not list(tmp_path.glob('.*.tmp'))
    imgs = sorted((sample_png/'testing'/'4').iterdir())[:5]
    here = [float(trained.predict(f)[2]) for f in imgs]
    code = textwrap.dedent(f"""
        import json
        from fastai.learner import load_learner
        learn = load_learner({str(fn)!r})
        print(json.dumps([float(learn.predict(f)[2]) for f in {[str(f) for f in imgs]!r}]))
    """)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    there = json.loads(out.strip().splitlines()[-1])
    assert np.allclose(here, there, atol=1e-6)
    assert load_learner(fn).dls.vocab == trained.dls.vocab


def test_show_results_returns_its_figure_as_show_batch_does(trained):
    import matplotlib.figure, matplotlib.pyplot as plt
    fig = trained.show_results(max_n=4)
    assert isinstance(fig, matplotlib.figure.Figure) and isinstance(trained.dls.show_batch(max_n=4), matplotlib.figure.Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == 4 and all(re.fullmatch(r'[48]/[48]', t) for t in titles)  # target/prediction
    assert fig._suptitle.get_text() == 'target/prediction'
    dl = trained.dls.test_dl(trained.dls.valid.dataset.x[:3])
    assert len([ax for ax in trained.show_results(dl=dl).axes if ax.images]) == 3  # a test_dl's: predictions alone
    plt.close('all')


@pytest.mark.parametrize('name', ['model.pt', 'model.pth', 'model', 'model.pkl.tmp'])
def test_export_takes_the_command_lines_two_suffixes_only(trained, tmp_path, name):
    "As `train --out`: '.pkl' or '.safetensors' (any case), anything else refused and nothing written"
    with pytest.raises(BinaryDigitsError, match=r"ends in '\.safetensors' .* or '\.pkl'"): trained.export(tmp_path/name)
    assert not list(tmp_path.iterdir())
    trained.export(tmp_path/'model.PKL')
    trained.export(tmp_path/'model.SafeTensors')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.PKL', 'model.SafeTensors']


def test_export_never_leaves_a_half_written_file(trained, tmp_path, monkeypatch):
    fn = tmp_path/'model.pkl'
    trained.export(fn)
    good = fn.read_bytes()
    import fastai.learner
    def _fail(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(fastai.learner.torch, 'save', _fail)
    with pytest.raises(OSError, match='disk full'): trained.export(fn)
    assert fn.read_bytes() == good and not list(tmp_path.glob('.*.tmp'))


def test_plot_weights(trained, sample_dls):
    fig = plot_weights(trained)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1 and shown[0].images[0].get_array().shape == (28, 28)
    assert 'red pushes towards 8' in fig._suptitle.get_text()
    w = trained.model.weight.detach().view(28, 28).numpy()
    assert np.allclose(shown[0].images[0].get_array(), w)
    deep = binary_learner(sample_dls, arch='deep')
    assert len([ax for ax in plot_weights(deep, max_n=9).axes if ax.images]) == 9
    assert len([ax for ax in plot_weights(binary_learner(sample_dls, arch='cnn')).axes if ax.images]) == 8


# ---------------------------------------------------------------------------------------------------------------
# Accuracy on the full set (CI passes its location in MNIST_IDX_DIR)

@pytest.mark.parametrize('arch,fit,least', [('linear', ('fit', 20, 0.1), 0.985), ('deep', ('fit', 20, 0.1), 0.99),
                                             ('cnn', ('fit_one_cycle', 10, 0.3), 0.995)],  # cnn: 0.9962-0.9974, 4 seeds
                         ids=['linear', 'deep', 'cnn'])
def test_full_accuracy(full_learner, arch, fit, least):
    "The README's table: 4 vs 8, default 20% split, seed 42"
    acc = full_learner(arch, fit).recorder.values[-1][2]
    print(f"{arch}: {fit[0]}{fit[1:]} on 4 vs 8, validation accuracy {acc:.4f}")
    assert acc >= least

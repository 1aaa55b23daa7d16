"Pictures: digits in a grid (`show_batch`, `show_results`, the top losses), what the model sees, what it learned"
from pathlib import Path

import torch
from torch import Tensor, nn
from fastai.vision.data import get_grid

from .checks import BinaryDigitsError

__all__ = ['plot_weights', 'show_prepared']  # (`show_digits` and `plot_digit_losses` serve the loaders)


def show_digits(x, titles=None, colors=None, suptitle=None, ncols=None, figsize=None, **kwargs):
    "A grid of digits, rows of 784 values in 0..1, with their `titles` (in `colors`); returns the figure"
    fig, axs = get_grid(len(x), ncols=ncols, figsize=figsize, imsize=1.7, title=suptitle, return_fig=True)
    for i, ax in enumerate(axs):
        ax.imshow(x[i].detach().cpu().reshape(28, 28).numpy(), cmap='Greys', vmin=0, vmax=1)
        ax.set_axis_off()
        if titles is not None: ax.set_title(titles[i], **({} if colors is None else dict(color=colors[i])))
    fig.tight_layout()
    return fig


def plot_digit_losses(samples, outs, raws, losses, ncols=None, figsize=None, **kwargs):
    "fastai's `plot_top_losses` for digits, each titled with its digit, the prediction and the prediction's probability"
    # `raws` hold the probability of pair[1]; `mnist_loss`'s loss would only repeat the other digit's probability
    titles = [f'{s[1]}/{o[0]}/{max(r.item(), 1-r.item()):.2f}' for s, o, r in zip(samples, outs, raws)]
    x = torch.stack([s[0].as_subclass(Tensor) for s in samples])
    return show_digits(x, titles, suptitle='Actual/Prediction/Probability of the prediction', ncols=ncols,
                       figsize=figsize)


def plot_weights(learn, max_n:int=16, ncols:int|None=None, figsize=None):
    "Show the first layer's weights as 28x28 pictures, red above zero and blue below (for a cnn, its first kernels)"
    layer = next((m for m in learn.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if layer is None: raise BinaryDigitsError(f"{type(learn.model).__name__} has no nn.Linear or nn.Conv2d layer whose "
                                              "weights could be shown")
    w, linear = layer.weight.detach().float().cpu(), isinstance(layer, nn.Linear)
    if linear and w.shape[1] != 28*28:
        raise BinaryDigitsError(f"The first linear layer takes {w.shape[1]} inputs, not 784 pixels")
    w = w.view(-1, 28, 28)[:max_n] if linear else w[:max_n, 0]  # a cnn's: the kernels that see the greyscale input
    one = len(w) == 1
    figsize = figsize or ((5, 4.2) if one else None)
    fig, axs = get_grid(len(w), ncols=ncols, figsize=figsize, imsize=1.7, return_fig=True)
    for i, ax in enumerate(axs):
        lim = float(w[i].abs().max()) or 1.0
        im = ax.imshow(w[i].numpy(), cmap='bwr', vmin=-lim, vmax=lim)
        ax.set_axis_off()
        if not one: ax.set_title(f'unit {i}', fontsize=8)
    if one: fig.colorbar(im, ax=axs[0], shrink=0.8)
    title = f"{type(learn.model).__name__} {'weights' if linear else 'first kernels'}"
    vocab = getattr(learn.dls, 'vocab', None)
    if vocab is not None and len(vocab) == 2: title += f': red pushes towards {vocab[1]}, blue towards {vocab[0]}'
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_prepared(images, titles=None, ncols:int|None=None, figsize=None):
    "Each of `images` beside the 28x28 the model sees (`prepare_digit`'s, or 'no digit found'); returns the figure"
    from .images import as_pil_image
    from .prepare import prepare_digit
    if isinstance(images, (str, Path)) or hasattr(images, 'mode') or hasattr(images, 'shape'): images = [images]
    images = list(images)
    ncols = ncols or min(len(images), 3)
    figsize = figsize or (4.4*ncols, 2.4*-(-len(images)//ncols))
    fig, axs = get_grid(len(images), ncols=ncols, double=True, figsize=figsize, return_fig=True)
    for i, (o, shown, seen) in enumerate(zip(images, axs[::2], axs[1::2])):
        im = as_pil_image(o)
        shown.imshow(im, cmap='gray' if im.mode in ('L', 'LA') else None)
        name = Path(o).name if isinstance(o, (str, Path)) else 'image'
        shown.set_title(titles[i] if titles is not None else name, fontsize=9)
        p = prepare_digit(o)
        if p is None: seen.text(0.5, 0.5, 'no digit\nfound', ha='center', va='center', color='red')
        else: seen.imshow(p, cmap='gray', vmin=0, vmax=255)
        seen.set_title('what the model sees', fontsize=9)
        for ax in (shown, seen): ax.set_axis_off()
    fig.tight_layout()
    return fig

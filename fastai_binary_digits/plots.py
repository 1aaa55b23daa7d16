"Pictures of what a model learned: the book's 'each pixel is a weight'"
from __future__ import annotations
import numpy as np
from torch import nn

__all__ = ['plot_weights']


def _grid_axes(n:int, ncols:int|None=None, figsize=None, cell=(1.6, 1.8)):
    "A figure of `n` axes in a near-square grid (`ncols` across), axes off; returns the figure and the `n` axes"
    import matplotlib.pyplot as plt
    ncols = ncols or min(n, int(np.ceil(np.sqrt(n))))
    nrows = int(np.ceil(n/ncols))
    fig, axs = plt.subplots(nrows, ncols, figsize=figsize or (cell[0]*ncols, cell[1]*nrows), squeeze=False)
    for ax in axs.flat: ax.set_axis_off()
    return fig, axs.flat[:n]


def _first_layer(model:nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)): return m
    raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer whose weights could be shown")


def plot_weights(learn, max_n:int=16, ncols:int|None=None, figsize=None):
    "Show the first layer's weights as 28x28 pictures, red above zero and blue below (for a cnn, its first kernels)"
    layer = _first_layer(learn.model)
    w = layer.weight.detach().float().cpu()
    if isinstance(layer, nn.Linear):
        if w.shape[1] != 28*28: raise ValueError(f"The first linear layer takes {w.shape[1]} inputs, not 784 pixels")
        w = w.view(-1, 28, 28)
    else: w = w[:, 0]  # conv kernels seen by the greyscale input
    w = w[:max_n]
    big = len(w) == 1
    fig, axs = _grid_axes(len(w), ncols, figsize or ((5, 4.2) if big else None), cell=(1.7, 1.7))
    vocab = getattr(learn.dls, 'vocab', None)
    for i, ax in enumerate(axs):
        lim = float(w[i].abs().max()) or 1.0
        im = ax.imshow(w[i].numpy(), cmap='bwr', vmin=-lim, vmax=lim)
        if not big: ax.set_title(f'unit {i}', fontsize=8)
    if big: fig.colorbar(im, ax=axs[0], shrink=0.8)
    what = 'weights' if isinstance(layer, nn.Linear) else 'first kernels'
    title = f'{type(learn.model).__name__} {what}'
    if vocab is not None and len(vocab) == 2: title += f': red pushes towards {vocab[1]}, blue towards {vocab[0]}'
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

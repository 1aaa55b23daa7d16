"Models that take flattened digits (bs, 784) and return one raw output per image (bs, 1)"
from torch import nn
from fastai.layers import ConvLayer

from .checks import ARCH_NAMES

__all__ = ['linear_model', 'simple_net', 'deep_net', 'cnn', 'ARCHS']


def linear_model() -> nn.Module:
    "One weight per pixel and a bias: the book's first model"
    return nn.Linear(28*28, 1)


def simple_net() -> nn.Module:
    "The book's 784-30-1 net with a ReLU"
    return nn.Sequential(nn.Linear(28*28, 30), nn.ReLU(), nn.Linear(30, 1))


def deep_net() -> nn.Module:
    "784-256-128-64-32-1 with ReLUs"
    sizes = [28*28, 256, 128, 64, 32]
    return nn.Sequential(*[m for ni, nf in zip(sizes, sizes[1:]) for m in (nn.Linear(ni, nf), nn.ReLU())],
                         nn.Linear(sizes[-1], 1))


def cnn() -> nn.Module:
    "A small convolutional net, the accurate choice: fastai's `ConvLayer`s of stride 2, 28x28 -> 14 -> 7 -> 4 -> 2"
    sizes = [1, 8, 16, 32, 64]
    # `init=None`: PyTorch's own initialisation, which trains better than Kaiming's with the book's SGD and loss
    convs = [ConvLayer(ni, nf, stride=2, init=None) for ni, nf in zip(sizes, sizes[1:])]
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), *convs, nn.Flatten(), nn.Linear(64*2*2, 1))


ARCHS = dict(zip(ARCH_NAMES, (linear_model, simple_net, deep_net, cnn)))  # the names `binary_learner` takes

"Models that take flattened digits (bs, 784) and return one raw output per image (bs, 1)"
from __future__ import annotations
from torch import nn

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
    layers = [m for ni, nf in zip(sizes, sizes[1:]) for m in (nn.Linear(ni, nf), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 1))


def _conv(ni:int, nf:int) -> nn.Module:
    "3x3 convolution with stride 2 (halves the image), batchnorm and ReLU"
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())


def cnn() -> nn.Module:
    "A small convolutional net, the accurate choice: 28x28 -> 14 -> 7 -> 4 -> 2, then one output"
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), _conv(1, 8), _conv(8, 16), _conv(16, 32), _conv(32, 64),
                         nn.Flatten(), nn.Linear(64*2*2, 1))


ARCHS = {'linear': linear_model, 'simple': simple_net, 'deep': deep_net, 'cnn': cnn}  # names `binary_learner` takes

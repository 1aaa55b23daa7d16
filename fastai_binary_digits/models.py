"""Models that take flattened digits (bs, 784) and return one raw output per image (bs, 1). Each takes PyTorch's
`device`: where its weights are made; 'meta' makes a skeleton without data, for weights loaded from a file"""
from __future__ import annotations
import torch
from torch import nn

__all__ = ['linear_model', 'simple_net', 'deep_net', 'cnn', 'ARCHS']


def linear_model(device:torch.device|str|None=None) -> nn.Module:
    "One weight per pixel and a bias: the book's first model"
    return nn.Linear(28*28, 1, device=device)


def simple_net(device:torch.device|str|None=None) -> nn.Module:
    "The book's 784-30-1 net with a ReLU"
    return nn.Sequential(nn.Linear(28*28, 30, device=device), nn.ReLU(), nn.Linear(30, 1, device=device))


def deep_net(device:torch.device|str|None=None) -> nn.Module:
    "784-256-128-64-32-1 with ReLUs"
    sizes = [28*28, 256, 128, 64, 32]
    layers = [m for ni, nf in zip(sizes, sizes[1:]) for m in (nn.Linear(ni, nf, device=device), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 1, device=device))


def _conv(ni:int, nf:int, device=None) -> nn.Module:
    "3x3 convolution with stride 2 (halves the image), batchnorm and ReLU"
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=2, padding=1, bias=False, device=device),
                         nn.BatchNorm2d(nf, device=device), nn.ReLU())


def cnn(device:torch.device|str|None=None) -> nn.Module:
    "A small convolutional net, the accurate choice: 28x28 -> 14 -> 7 -> 4 -> 2, then one output"
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), *(_conv(ni, nf, device) for ni, nf in
                                                          ((1, 8), (8, 16), (16, 32), (32, 64))),
                         nn.Flatten(), nn.Linear(64*2*2, 1, device=device))


ARCHS = {'linear': linear_model, 'simple': simple_net, 'deep': deep_net, 'cnn': cnn}  # names `binary_learner` takes

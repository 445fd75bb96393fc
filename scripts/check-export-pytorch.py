#!/usr/bin/env python3
"""Loads a goten export (`small` model) into the equivalent PyTorch module and evaluates it.

An export from `goten decrypt-model` (or a plain-mode `--export`) must load into PyTorch with
`load_state_dict(strict=True)`: every name, shape and dtype as torch expects. The script then
classifies a CIFAR-10 test batch with PyTorch and prints the accuracy, to compare with what
goten reported (`goten predict --weights FILE --data test_batch.bin`).

Usage (needs torch, safetensors and numpy from PyPI; not part of CI, which installs no torch):
    python3 scripts/check-export-pytorch.py MODEL.safetensors ../shared/data/cifar-10-batches-bin/test_batch.bin [LIMIT]
"""
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


def small(classes=10):
    """goten's `small` network, with its export's names (torchvision-style numbering)."""
    layers = []
    cin = 3
    for cout in (16, 32, 32):
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        cin = cout
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.classifier = nn.Sequential(nn.Linear(32 * 4 * 4, classes, bias=False))
    return model


def forward(model, x):
    return model.classifier(torch.flatten(model.features(x), 1))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    weights, test = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    model = small()
    model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    raw = np.fromfile(test, dtype=np.uint8).reshape(-1, 3073)[:limit]
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = forward(model, x).argmax(1)
    acc = (pred == labels).float().mean().item()
    print(f'{{"images": {len(labels)}, "accuracy": {acc:.4f}, "loaded": "strict"}}')


if __name__ == "__main__":
    main()

"""Randomly initialised aisfx weights saved in the package's checkpoint format (for tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detectors.embedders.aisfx import AisfxCNN


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of :class:`AisfxCNN` with random weights and batch-norm statistics."""
    torch.manual_seed(seed)
    net = AisfxCNN()
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
    return net.state_dict()


def save_checkpoint(path: Path, seed: int = 0) -> Path:
    """``torch.save((state_dict, datasets))`` as the aisfx wheel's checkpoint.pth is made:
    the embedding network under ``embedding_net.``, a classifier head under ``fc.``, and a
    dataset table holding numpy integers."""
    state = {f"embedding_net.{k}": v for k, v in random_state(seed).items()}
    state["fc.0.0.weight"] = torch.zeros(256, 512)
    state["fc.0.0.bias"] = torch.zeros(256)
    datasets = {"prosfx": (np.int64(0), 78), "ucsMixed": (np.int64(1), 69)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save((state, datasets), path)
    return path

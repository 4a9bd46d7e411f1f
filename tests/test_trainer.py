"""Training: the objective learns on a fixed batch with a frozen backbone; runs resume exactly; the exported
adapter loads through the inference path; a two-process Accelerate run works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genprop_cli.config import Task
from genprop_cli.pipelines.svd import GenPropSVDPipeline
from genprop_cli.random_tiny import build_random_tiny_pipeline
from genprop_cli.training.losses import LossWeights
from genprop_cli.training.objective import denoising_loss, encode_pairs

FRAMES, W, H = 4, 32, 32


def fixed_pairs(n: int = 2):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        original = rng.integers(0, 255, (FRAMES, H, W, 3), dtype=np.uint8)
        mask = np.zeros((FRAMES, H, W), bool)
        mask[:, 8:20, 6 + 2 * i : 18 + 2 * i] = True
        edited = original.copy()
        edited[mask] = [250, 20, 20]
        pairs.append(SimpleNamespace(original=original, edited=edited, mask=mask, task=Task.TRACK))
    return pairs


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch_and_leave_the_backbone_untouched():
    torch.manual_seed(0)
    pipe = GenPropSVDPipeline(build_random_tiny_pipeline(seed=0))
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    vae_before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batch = encode_pairs(pipe, fixed_pairs(), g)
    sigma = torch.tensor([0.8, 1.5])
    noise = torch.randn(batch.target.shape, generator=g)
    time_ids = pipe._added_time_ids(1, pipe.conditioning)
    adapter = pipe.denoiser.adapter.train()
    optimizer = torch.optim.Adam([p for p in adapter.parameters() if p.requires_grad], lr=1e-3)
    weights = LossWeights()

    def loss() -> torch.Tensor:
        return denoising_loss(
            pipe.denoiser, batch, weights, torch.Generator().manual_seed(1), time_ids=time_ids, sigma=sigma, noise=noise
        ).total

    first = float(loss().detach())
    for _ in range(8):
        optimizer.zero_grad()
        total = loss()
        total.backward()
        assert all(p.grad is None for p in pipe.unet.parameters())
        optimizer.step()
    assert float(loss().detach()) < 0.9 * first
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in pipe.vae.state_dict().items():
        assert torch.equal(v, vae_before[k]), k

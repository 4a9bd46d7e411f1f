"""Training on a Wan backbone (families/wan/objective.py): masks in the causal VAE's frame layout, the loss
falls on a fixed batch with the backbone bit-identical, both conditioning modes, and `genprop train` on the
tiny DiT writes an adapter that the propagation commands load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genprop_cli.cli import app
from genprop_cli.config import Task
from genprop_cli.families.wan.objective import FlowObjective
from genprop_cli.families.wan.sampler import GenPropWanPipeline
from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline
from genprop_cli.training.losses import LossWeights
from genprop_cli.training.objective import objective_for
import vis_datasets
from vis_datasets import scene, write_davis

FRAMES, W, H = 9, 32, 32  # 9 frames: 3 latent frames


def fixed_pairs(n: int = 2):
    return vis_datasets.fixed_pairs(n, FRAMES, (W, H), Task.REMOVE)


@pytest.fixture(params=["i2v", "ti2v"])
def pipe(request) -> GenPropWanPipeline:
    torch.manual_seed(0)
    return GenPropWanPipeline(build_random_tiny_wan_pipeline(seed=0, ti2v=request.param == "ti2v"))


def test_the_family_picks_the_objective(pipe):
    assert isinstance(objective_for(pipe), FlowObjective)
    assert objective_for(pipe).shift == 5.0  # the variant scheduler's shift


def test_masks_per_latent_frame_are_the_union_of_the_frames_each_holds(pipe):
    mask = torch.zeros(FRAMES, 4, 4)
    mask[0, 0, 0] = 1  # frame 0: latent 0 alone
    mask[3, 1, 1] = 1  # frames 1-4: latent 1
    mask[8, 2, 2] = 1  # frames 5-8: latent 2
    latent = FlowObjective(pipe).latent_frames_mask(mask, 3)
    assert latent.shape == (3, 4, 4)
    assert [tuple(torch.nonzero(f).flatten().tolist()) for f in latent] == [(0, 0), (1, 1), (2, 2)]


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch_and_leave_the_backbone_untouched(pipe):
    objective = FlowObjective(pipe)
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batch = objective.encode(fixed_pairs(), g)
    channels, side = (48, 2) if pipe.expand_timesteps else (16, 4)  # Wan 2.2's VAE (TI2V) vs 2.1's
    assert batch.target.shape == (2, channels, 3, side, side) and batch.mask.shape == (2, 3, 1, side, side)
    levels = torch.tensor([0.3, 0.7])
    noise = torch.randn(batch.target.shape, generator=g)
    adapter = pipe.denoiser.adapter.train()
    optimizer = torch.optim.Adam([p for p in adapter.parameters() if p.requires_grad], lr=1e-3)

    def loss():
        return objective.loss(pipe.denoiser, batch, LossWeights(), torch.Generator().manual_seed(1), levels=levels, noise=noise)

    first = loss()
    assert all(torch.isfinite(v) for v in vars(first).values())
    for _ in range(8):
        optimizer.zero_grad()
        loss().total.backward()
        optimizer.step()
    assert float(loss().total.detach()) < float(first.total.detach())
    assert all(torch.equal(before[k], v) for k, v in pipe.transformer.state_dict().items())
    assert not any(p.grad is not None for p in pipe.transformer.parameters())


def test_genprop_train_on_the_tiny_dit_writes_an_adapter_the_render_loads(tmp_path):
    data = write_davis(tmp_path / "davis", {f"seq{i}": scene(frames=12, size=(48, 32), seed=i) for i in range(2)})
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--data", str(data), "--model", "random-tiny-wan", "--output", str(run), "--steps", "2",
        "--frames", "9", "--width", "32", "--height", "32", "--device", "cpu", "-q", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and set(summary["final_terms"]) == {"non_mask", "mask", "grad", "mpd", "total"}
    adapter = Path(summary["adapter"])
    from clips import make_clip, pattern_frame
    from PIL import Image

    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=12, audio=None)
    Image.fromarray(pattern_frame(0, 64, 48)).save(tmp_path / "e.png")
    rendered = CliRunner().invoke(app, ["remove", str(clip), "-f", str(tmp_path / "e.png"), "--model", "random-tiny-wan",
                                        "--adapter", str(adapter), "-o", str(tmp_path / "out.mp4"), "--json", "-q"])  # fmt: skip
    assert rendered.exit_code == 0, rendered.output
    from genprop_cli.weights import sha256_file

    assert json.loads(rendered.stdout)["adapter_sha256"] == sha256_file(adapter)  # the trained file was used


def test_a_source_noised_step_trains_the_mpd_alone(pipe):
    objective = FlowObjective(pipe)
    g = torch.Generator().manual_seed(0)
    batch = objective.encode(fixed_pairs(), g)
    levels, noise = torch.tensor([0.3, 0.7]), torch.randn(batch.target.shape, generator=g)
    weights = LossWeights(mpd=0.5, mpd_source_noised=1.0)
    terms = objective.loss(pipe.denoiser, batch, weights, torch.Generator().manual_seed(1), levels=levels, noise=noise)
    assert float(terms.total.detach()) == pytest.approx(0.5 * float(terms.mpd.detach()))
    assert math.isnan(float(terms.non_mask)) and math.isnan(float(terms.grad))  # not measured on such a step

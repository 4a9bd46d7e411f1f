"""Training: the objective learns on a fixed batch with a frozen backbone; runs resume exactly; the exported
adapter loads through the inference path; a two-process Accelerate run works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genprop_cli.config import Task
from genprop_cli.pipelines.svd import GenPropSVDPipeline
from genprop_cli.random_tiny import build_random_tiny_pipeline
from genprop_cli.training.losses import LossWeights
from genprop_cli.training.objective import denoising_loss, encode_pairs

import vis_datasets

FRAMES, W, H = 4, 32, 32


def fixed_pairs(n: int = 2):
    return vis_datasets.fixed_pairs(n, FRAMES, (W, H), Task.TRACK)


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


# --- whole runs on a tiny DAVIS-layout dataset -------------------------------------------------------

from vis_datasets import scene, write_davis  # noqa: E402

from genprop_cli.errors import OptionError  # noqa: E402
from genprop_cli.training.trainer import TrainConfig, latest_checkpoint, train  # noqa: E402


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("davis")
    return write_davis(root, {f"seq{i}": scene(frames=10, size=(48, 32), seed=i) for i in range(3)})


def config(data: Path, output: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), output=str(output), model="random-tiny", steps=4, frames=4, width=32, height=32,
                save_every=2, lr=1e-3)
    return TrainConfig.from_dict({**base, **overrides})


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def test_resumed_run_follows_the_same_trajectory_as_an_uninterrupted_one(davis, tmp_path):
    straight = train(config(davis, tmp_path / "straight"))
    split = tmp_path / "split"
    first_half = train(config(davis, split, steps=2))
    assert first_half.resumed_from == 0 and latest_checkpoint(split).name == "step-00000002"
    second_half = train(config(davis, split, steps=4))
    assert second_half.resumed_from == 2
    a, b = read_log(tmp_path / "straight"), read_log(split)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for term in ("total", "non_mask", "mask", "grad", "mpd"):
            assert rb[term] == pytest.approx(ra[term], rel=1e-4, abs=1e-7), (ra["step"], term)
    assert straight.final_terms["total"] == pytest.approx(second_half.final_terms["total"], rel=1e-4)


def test_a_checkpoint_of_other_options_is_never_reused(davis, tmp_path):
    train(config(davis, tmp_path / "run", steps=2))
    with pytest.raises(OptionError, match="other options"):
        train(config(davis, tmp_path / "run", steps=4, lr=5e-4))


def test_exported_adapter_loads_through_inference_and_changes_the_output(davis, tmp_path):
    from clips import make_clip, pattern_frame

    from genprop_cli.api import Clip, GenProp
    from genprop_cli.config import PropagationOptions

    result = train(config(davis, tmp_path / "run", steps=3, ema_decay=0.5, sce_blocks=2))
    adapter = Path(result.adapter)
    assert adapter.exists() and result.dataset["used"] == 3
    video = make_clip(tmp_path / "c.mp4", width=48, height=32, frames=6, audio=None)
    clip = Clip.open(video, pattern_frame(0, 48, 32))
    options = PropagationOptions(steps=2, seed=3)
    zero = GenProp.load("random-tiny", device="cpu")
    trained = GenProp.load("random-tiny", device="cpu", adapter=str(adapter))
    assert trained.pipeline.denoiser.adapter.config.sce_blocks == 2
    a = np.stack([f.rgb for f in zero.propagate(clip, options)])
    b = np.stack([f.rgb for f in trained.propagate(clip, options)])
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 0.1


def test_train_command_writes_an_adapter_and_a_json_summary(davis, tmp_path):
    from typer.testing import CliRunner

    from genprop_cli.cli import app

    cfg = tmp_path / "run.toml"
    cfg.write_text("frames = 4\nwidth = 32\nheight = 32\nlr = 1e-3\n[augment]\ncolor_fill = 1.0\ncopy_paste = 0\nmask_fill = 0\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(davis), "--format", "davis", "--model", "random-tiny",
                                      "--steps", "2", "--output", str(out), "--config", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and Path(summary["adapter"]).exists()
    assert set(summary["final_terms"]) == {"non_mask", "mask", "grad", "mpd", "total"}
    bad = CliRunner().invoke(app, ["train", "--data", str(davis), "--output", str(tmp_path / "x"), "--steps", "0"])
    assert bad.exit_code == 2 and "steps" in bad.stderr and "Traceback" not in bad.output
    missing = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "y")])
    assert missing.exit_code == 3 and "nope" in missing.stderr


def test_two_processes_through_accelerate_write_one_adapter(davis, tmp_path):
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "genprop_cli", "train", "--model", "random-tiny", "--data", str(davis),
           "--output", str(out), "--steps", "2", "--frames", "4", "--width", "32", "--height", "32",
           "--device", "cpu", "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["adapter.safetensors"]


def test_gradient_checkpointing_gives_the_same_losses(davis, tmp_path):
    plain = train(config(davis, tmp_path / "plain", steps=2))
    checkpointed = train(config(davis, tmp_path / "ckpt", steps=2, gradient_checkpointing=True))
    for term, value in plain.final_terms.items():
        assert checkpointed.final_terms[term] == pytest.approx(value, rel=1e-4, abs=1e-7), term


def test_clip_length_and_size_default_to_the_variants():
    from genprop_cli.training.trainer import with_variant_defaults

    svd = with_variant_defaults(TrainConfig(data="d", output="o", model="svd-xt"))
    assert (svd.frames, svd.width, svd.height) == (25, 1024, 576)
    tiny = with_variant_defaults(TrainConfig(data="d", output="o", model="random-tiny", frames=4))
    assert tiny.frames == 4 and tiny.width % 8 == 0 and tiny.height % 8 == 0 and tiny.width * tiny.height <= 4096

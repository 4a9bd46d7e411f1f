"""Training: the objective learns on a fixed batch with a frozen backbone; runs resume exactly; the exported
adapter loads through the inference path; a two-process Accelerate run works."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genprop_cli.config import Task
from genprop_cli.families.svd.objective import denoising_loss, encode_pairs
from genprop_cli.families.svd.sampler import GenPropSVDPipeline
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
from genprop_cli.training.losses import LossWeights

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


def test_source_noised_steps_show_the_model_the_noised_source_and_train_the_mpd_alone():
    import dataclasses

    from genprop_cli.training.losses import draws_source_noised

    torch.manual_seed(0)
    pipe = GenPropSVDPipeline(build_random_tiny_pipeline(seed=0))
    g = torch.Generator().manual_seed(0)
    batch = encode_pairs(pipe, fixed_pairs(), g)
    sigma, noise = torch.tensor([0.8, 1.5]), torch.randn(batch.target.shape, generator=g)
    time_ids = pipe._added_time_ids(1, pipe.conditioning)
    with torch.no_grad():  # an MPD that marks something, so that its input matters
        for p in pipe.denoiser.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.02)

    def terms(weights: LossWeights, batch):
        return denoising_loss(pipe.denoiser, batch, weights, torch.Generator().manual_seed(1), time_ids=time_ids,
                              sigma=sigma, noise=noise)  # fmt: skip

    always = terms(LossWeights(mpd=0.5, mpd_source_noised=1.0), batch)
    assert float(always.total) == pytest.approx(0.5 * float(always.mpd))
    assert all(math.isnan(float(t)) for t in (always.non_mask, always.mask, always.grad))  # not measured
    as_target = terms(LossWeights(mpd=0.5), dataclasses.replace(batch, target=batch.source))
    assert float(always.mpd) == pytest.approx(float(as_target.mpd), rel=1e-5)  # the same input: the source's
    assert float(always.mpd) != pytest.approx(float(terms(LossWeights(mpd=0.5), batch).mpd), rel=1e-5)

    never = torch.Generator().manual_seed(3)
    assert not draws_source_noised(LossWeights(), never, torch.device("cpu"))
    assert torch.equal(never.get_state(), torch.Generator().manual_seed(3).get_state())  # no draw at all
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        LossWeights(mpd_source_noised=1.5)


# --- whole runs on a tiny DAVIS-layout dataset -------------------------------------------------------

from vis_datasets import scene, write_davis  # noqa: E402

from genprop_cli.errors import OptionError  # noqa: E402
from genprop_cli.training.trainer import TrainConfig, export_checkpoint, latest_checkpoint, train  # noqa: E402


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


def test_checkpoints_hold_only_the_adapter_and_only_the_newest_are_kept(davis, tmp_path):
    from safetensors.torch import load_file

    from genprop_cli.training.trainer import ADAPTER_PREFIX

    result = train(config(davis, tmp_path / "run", steps=4, save_every=1, keep_checkpoints=2))
    folders = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert folders == ["step-00000003", "step-00000004"]
    saved = load_file(tmp_path / "run" / "checkpoints" / "step-00000004" / "model.safetensors")
    exported = load_file(result.adapter)
    assert set(saved) == {ADAPTER_PREFIX + k for k in exported}  # no frozen backbone tensor in a checkpoint
    for key, value in exported.items():
        torch.testing.assert_close(saved[ADAPTER_PREFIX + key], value, rtol=0, atol=0)


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
    (tmp_path / "warmup.toml").write_text("warmup_steps = 4\nlr = 1e-4\n")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "genprop_cli", "train", "--model", "random-tiny", "--data", str(davis),
           "--output", str(out), "--steps", "2", "--frames", "4", "--width", "32", "--height", "32",
           "--device", "cpu", "--config", str(tmp_path / "warmup.toml"), "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["adapter.safetensors"]
    # Warmup counts optimizer steps, not optimizer steps times processes: lr after step s is lr * (s + 1) / 4.
    assert [r["lr"] for r in read_log(out)] == pytest.approx([0.5e-4, 0.75e-4])


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


# --- gradient accumulation and EMA ---------------------------------------------------------------------

from dataclasses import fields  # noqa: E402

from safetensors.torch import load_file  # noqa: E402

from genprop_cli.families.svd.objective import EDMObjective  # noqa: E402
from genprop_cli.training import trainer as trainer_module  # noqa: E402
from genprop_cli.training.objective import TrainingBatch  # noqa: E402


class SameNoiseObjective(EDMObjective):
    """The EDM objective with each clip's conditioning noise, sigma and noise fixed, so that a clip's loss does
    not depend on the micro-batch it is in (the finite-difference probe still does: L_grad's weight is set 0)."""

    def encode(self, pairs, generator: torch.Generator) -> TrainingBatch:
        encode_one = super().encode
        parts = [encode_one([pair], torch.Generator().manual_seed(0)) for pair in pairs]
        return TrainingBatch(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(TrainingBatch)})

    def loss(self, denoiser, batch, weights, generator):
        b = batch.target.shape[0]
        noise = torch.randn(batch.target.shape[1:], generator=torch.Generator().manual_seed(1)).expand_as(batch.target)
        return denoising_loss(denoiser, batch, weights, generator, time_ids=self.time_ids, sigma=torch.ones(b),
                              noise=noise)


ADAMW = torch.optim.AdamW


def recording_adamw(record: list) -> type:
    """AdamW that appends to `record`, at each real optimizer step, the gradients it applies and the weights
    it leaves."""

    class RecordingAdamW(ADAMW):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            grads = [p.grad.clone() for p in params]
            loss = super().step(closure)
            record.append((grads, [p.detach().clone() for p in params]))
            return loss

    return RecordingAdamW


def test_two_accumulated_micro_batches_of_one_step_like_one_batch_of_two(davis, tmp_path, monkeypatch):
    """The same two clips (masks of equal area, so a batch's region means are the mean of the clips') with the
    same noise, for 2 steps: batch 1 x grad_accum 2 makes one optimizer step per two micro-batches and applies
    the gradient that batch 2 x grad_accum 1 applies, within rtol 1e-4 + atol 1e-7 (gradients reach 4e-2; the
    float32 summation order differs). The updated weights agree within lr / 100 (seen: 1.4e-6) wherever the
    gradient is above float noise (|g| > 1e-6 at both steps); elsewhere Adam divides noise-level gradients
    (~1e-10) by its eps (1e-8) and moves weights by a noise-dependent fraction of lr. A broken accumulation
    moves weights by ~lr."""
    pairs = fixed_pairs(2)
    monkeypatch.setattr(trainer_module.PairStream, "pairs",
                        lambda self, step, micro, process, count: pairs[micro * count:(micro + 1) * count])
    monkeypatch.setattr(trainer_module, "objective_for", lambda pipe, schedule: SameNoiseObjective(pipe, schedule))
    options = dict(steps=2, lr=1e-3, loss={"grad": 0.0})
    applied: dict[str, list] = {"accumulated": [], "batched": []}
    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw(applied["accumulated"]))
    accumulated = train(config(davis, tmp_path / "accum", batch_size=1, grad_accum=2, **options))
    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw(applied["batched"]))
    batched = train(config(davis, tmp_path / "batch", batch_size=2, grad_accum=1, **options))
    assert len(applied["accumulated"]) == len(applied["batched"]) == 2  # steps; the accumulated run had 4 micro-batches
    for step, ((grads_a, _), (grads_b, _)) in enumerate(zip(applied["accumulated"], applied["batched"])):
        assert len(grads_a) == len(grads_b) and any(g.abs().max() > 1e-3 for g in grads_a)
        for ga, gb in zip(grads_a, grads_b):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-7, msg=lambda m: f"step {step}: {m}")
    (first, _), (second, weights_a) = applied["accumulated"]
    weights_b = applied["batched"][-1][1]
    compared = 0
    for g0, g1, wa, wb in zip(first, second, weights_a, weights_b):
        learning = (g0.abs() > 1e-6) & (g1.abs() > 1e-6)
        compared += int(learning.sum())
        torch.testing.assert_close(wa[learning], wb[learning], rtol=0, atol=1e-5)
    assert compared > 10_000
    # The logged terms of a step are the mean over its micro-batches: here, the batch of two's.
    for term, value in batched.final_terms.items():
        assert accumulated.final_terms[term] == pytest.approx(value, rel=1e-4, abs=1e-7), term


def test_an_ema_run_resumed_halfway_exports_the_same_adapter_as_an_uninterrupted_one(davis, tmp_path):
    straight = train(config(davis, tmp_path / "straight", ema_decay=0.5))
    split = tmp_path / "split"
    train(config(davis, split, steps=2, ema_decay=0.5))
    resumed = train(config(davis, split, steps=4, ema_decay=0.5))
    assert resumed.resumed_from == 2
    a, b = load_file(straight.adapter), load_file(resumed.adapter)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-7, msg=k)
    # What was exported is the EMA, not the last weights (which the step-4 checkpoint holds).
    last = load_file(str(latest_checkpoint(tmp_path / "straight") / "model.safetensors"))
    assert any(not torch.equal(a[k], last[f"adapter.{k}"]) for k in a)
    # export_checkpoint writes the same EMA adapter from the checkpoint alone, and a half-size copy of it.
    checkpoint = latest_checkpoint(tmp_path / "straight")
    exported = load_file(str(export_checkpoint(checkpoint, tmp_path / "export.safetensors")))
    half = load_file(str(export_checkpoint(checkpoint, tmp_path / "half.safetensors", half=True)))
    for k in a:
        torch.testing.assert_close(exported[k], a[k], msg=k)
        assert half[k].dtype == torch.float16
        torch.testing.assert_close(half[k].float(), a[k], rtol=1e-3, atol=1e-4, msg=k)


# --- skipped annotations in the summary and on stderr ----------------------------------------------------

from vis_datasets import write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ytvis_with_bad_annotations(tmp_path_factory) -> Path:
    """Three YouTube-VIS videos with two instances each; one instance has a mask of the wrong size in a frame,
    another is empty in every frame (both found when the dataset is indexed, so every run reports them)."""
    root = write_dataset(tmp_path_factory.mktemp("ytvis"), "ytvis",
                         {f"vid{i}": scene(frames=10, size=(48, 32), seed=i) for i in range(3)})
    document = json.loads((root / "instances.json").read_text())
    annotations = {a["id"]: a for a in document["annotations"]}
    annotations[102]["segmentations"][3] = {"size": [30, 40], "counts": [1200]}
    annotations[201]["segmentations"] = [None] * 10
    (root / "instances.json").write_text(json.dumps(document))
    return root


def test_train_command_reports_skipped_annotations_in_the_summary_and_on_stderr(ytvis_with_bad_annotations, tmp_path):
    from typer.testing import CliRunner

    from genprop_cli.cli import app

    out = tmp_path / "run"
    args = ["train", "--data", str(ytvis_with_bad_annotations), "--format", "ytvis", "--model", "random-tiny",
            "--steps", "2", "--output", str(out), "--frames", "4", "--width", "32", "--height", "32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    dataset = json.loads((out / "summary.json").read_text())["dataset"]
    assert (dataset["sequences"], dataset["used"], len(dataset["skipped"])) == (3, 3, 2)
    reasons = {s["item"]: s["reason"] for s in dataset["skipped"]}
    assert "segmentation is 40x30, the video is 48x32" in reasons["instances.json: annotation 102 (video 1)"]
    assert "empty in every frame" in reasons["instances.json: annotation 201 (video 2)"]
    assert f"skipped 2 unusable dataset items (see {out / 'summary.json'})" in result.stderr.splitlines()
    quiet = CliRunner().invoke(app, [*args, "-q"])  # the finished run again: nothing to train, nothing said
    assert quiet.exit_code == 0 and quiet.stderr == ""


# --- the distributed engine --------------------------------------------------------------------------

from accelerate.utils import DistributedType  # noqa: E402

from genprop_cli.training.trainer import check_data_parallel, launched_engine  # noqa: E402


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED", "MEGATRON_LM"])
def test_sharding_engines_are_refused_with_one_line_that_says_ddp(kind):
    for distributed_type in (DistributedType(kind), kind):
        with pytest.raises(OptionError, match="runs on DDP") as refused:
            check_data_parallel(distributed_type)
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize("kind", ["NO", "MULTI_CPU", "MULTI_GPU"])
def test_single_process_and_ddp_are_accepted(kind):
    check_data_parallel(DistributedType(kind))


def test_the_engine_accelerate_launch_asks_for_is_read_from_its_environment():
    assert launched_engine({}) == "NO"
    assert launched_engine({"ACCELERATE_USE_FSDP": "false", "ACCELERATE_USE_DEEPSPEED": "False"}) == "NO"
    assert launched_engine({"ACCELERATE_USE_FSDP": "true"}) == "FSDP"
    assert launched_engine({"ACCELERATE_USE_DEEPSPEED": "TRUE"}) == "DEEPSPEED"


def test_train_command_under_a_deepspeed_launch_fails_with_one_line_before_reading_data(tmp_path):
    from typer.testing import CliRunner

    from genprop_cli.cli import app

    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path / "never-read"), "--model", "random-tiny",
              "--output", str(tmp_path / "o"), "--frames", "4", "--width", "32", "--height", "32", "-q"],
        env={"ACCELERATE_USE_DEEPSPEED": "true"},
    )  # fmt: skip
    assert result.exit_code == 2 and "runs on DDP, not DeepSpeed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_mixed_precision_stores_the_frozen_parts_in_half_and_keeps_what_trains_in_float32():
    from genprop_cli.families.wan.sampler import GenPropWanPipeline
    from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline
    from genprop_cli.training.trainer import _store_frozen_in

    pipe = GenPropWanPipeline(build_random_tiny_wan_pipeline(seed=0))
    _store_frozen_in(pipe, "bf16")
    block = pipe.transformer.blocks[0]
    assert block.attn1.to_q.weight.dtype == block.ffn.net[2].weight.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == pipe.image_encoder.dtype == torch.bfloat16
    # what Wan keeps in float32 for numerical reasons stays so; the adapter and the VAE are untouched
    assert block.scale_shift_table.dtype == torch.float32
    assert pipe.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert {p.dtype for p in pipe.denoiser.adapter.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}


def test_a_bf16_mixed_precision_run_trains_like_a_float32_one(davis, tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState
    from safetensors import safe_open

    # The numerics are the point here, not the speed: tiny models run bf16 on any CPU.
    monkeypatch.setattr("genprop_cli.hardware.cpu_has_native_bf16", lambda: True)

    full = train(config(davis, tmp_path / "fp32", model="random-tiny-wan", steps=3))
    AcceleratorState._reset_state(True)  # one mixed-precision setting per process, as in a real launch
    try:
        half = train(config(davis, tmp_path / "bf16", model="random-tiny-wan", steps=3, mixed_precision="bf16"))
    finally:
        AcceleratorState._reset_state(True)
    for term in ("total", "non_mask", "mask", "mpd"):
        assert half.final_terms[term] == pytest.approx(full.final_terms[term], rel=0.05), term
    with safe_open(half.adapter, framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def test_a_run_on_unchanged_pairs_only_has_no_mask_term_and_teaches_the_mpd_to_mark_nothing(davis, tmp_path):
    """With every pair unchanged the mask is empty: L_mask and L_grad are exactly 0 (never NaN) and the MPD's
    balanced loss, the mean probability it gives the unedited frames, falls as it learns to mark nothing."""
    run = config(davis, tmp_path / "run", steps=6, augment={"copy_paste": 0, "mask_fill": 0, "color_fill": 0,
                                                             "unchanged": 1}, loss={"mpd_balanced": True})
    train(run)
    log = read_log(tmp_path / "run")
    assert all(r["mask"] == 0.0 and r["grad"] == 0.0 and math.isfinite(r["total"]) for r in log)
    assert log[-1]["mpd"] < log[0]["mpd"]


def test_a_log_leaves_out_the_denoising_terms_of_source_noised_steps_instead_of_averaging_zeros(davis, tmp_path):
    """Source-noised steps train the MPD alone: their denoising terms are not measured, so the log and the
    summary's means must read those terms from the other steps only (averaging zeros halved them before)."""
    run = config(davis, tmp_path / "run", steps=8, save_every=8, loss={"mpd_source_noised": 0.5})
    result = train(run)
    log = read_log(tmp_path / "run")
    noised = [r for r in log if "non_mask" not in r]
    measured = [r for r in log if "non_mask" in r]
    assert noised and measured  # seed 0 draws both kinds in 8 steps
    assert all(set(r) == {"step", "mpd", "total", "lr"} for r in noised)
    assert all(r["non_mask"] > 0 and math.isfinite(r["total"]) for r in measured)
    last = log[-10:]
    assert result.mean_terms_last_10["non_mask"] == pytest.approx(np.mean([r["non_mask"] for r in measured]))
    assert result.mean_terms_last_10["mpd"] == pytest.approx(np.mean([r["mpd"] for r in last]))


def test_step_terms_are_averaged_over_the_micro_batches_that_measured_them():
    from genprop_cli.training.trainer import _gathered_terms

    class OneProcess:
        def gather(self, tensor):
            return tensor

    nan = float("nan")
    micro = [torch.tensor([nan, 1.0, nan]), torch.tensor([3.0, 2.0, nan])]
    assert _gathered_terms(OneProcess(), ["non_mask", "mpd", "grad"], micro) == {"non_mask": 3.0, "mpd": 1.5}


def test_a_checkpoint_written_before_an_option_existed_resumes_under_its_default_only(davis, tmp_path):
    """A checkpoint whose saved options lack ones added since (here `[augment] unchanged` and `[loss]
    mpd_inside_weight`, removed from its trainer_state.json) resumes when the run leaves them at their defaults
    and is refused when it sets them."""
    run = tmp_path / "run"
    train(config(davis, run, steps=2))
    state_file = latest_checkpoint(run) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["augment"]["unchanged"], state["config"]["loss"]["mpd_inside_weight"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(OptionError, match="other options"):
        train(config(davis, run, steps=3, loss={"mpd_inside_weight": 2.0}))
    with pytest.raises(OptionError, match="other options"):
        train(config(davis, run, steps=3, augment={"unchanged": 0.5}))
    assert train(config(davis, run, steps=3)).resumed_from == 2


def test_a_run_adding_the_first_frame_change_starts_where_its_init_adapter_was_and_trains_the_new_input(
    davis, tmp_path
):
    from genprop_cli.families import backbone_for
    from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
    from genprop_cli.models.genprop import GenPropAdapter

    first = train(config(davis, tmp_path / "first", steps=2))
    same = train(config(davis, tmp_path / "same", steps=2, init_adapter=first.adapter, ema_decay=0.5))
    added = train(config(davis, tmp_path / "added", steps=2, init_adapter=first.adapter, ema_decay=0.5,
                         first_frame_change=True))  # fmt: skip
    # Step 1's loss is computed before any update: the zero-initialised input changes nothing there.
    assert read_log(tmp_path / "added")[0]["total"] == pytest.approx(read_log(tmp_path / "same")[0]["total"], rel=1e-5)
    adapter = GenPropAdapter.load(Path(added.adapter), backbone_for("svd", build_random_tiny_pipeline(seed=0).unet))
    assert adapter.config.first_frame_change
    assert adapter.sce.change_projection.weight.abs().max() > 0, "the new input must train"
    assert "change_projection" not in " ".join(load_file(same.adapter))
    exported = load_file(str(export_checkpoint(latest_checkpoint(tmp_path / "added"), tmp_path / "export.safetensors")))
    for key, value in load_file(added.adapter).items():
        torch.testing.assert_close(exported[key], value, msg=key)


def test_the_adapter_records_the_inside_weight_it_trained_with_in_the_run_and_the_export(davis, tmp_path):
    from genprop_cli.families import backbone_for
    from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
    from genprop_cli.models.genprop import GenPropAdapter

    weighted = train(config(davis, tmp_path / "weighted", steps=2, loss={"mpd_inside_weight": 4.0}))
    again = train(config(davis, tmp_path / "again", steps=2, init_adapter=weighted.adapter))  # now trained at 1
    exported = export_checkpoint(latest_checkpoint(tmp_path / "weighted"), tmp_path / "export.safetensors")
    unet = build_random_tiny_pipeline(seed=0).unet
    weights = [GenPropAdapter.load(Path(p), backbone_for("svd", unet)).config.mask_inside_weight
               for p in (weighted.adapter, exported, again.adapter)]  # fmt: skip
    assert weights == [4.0, 4.0, 1.0]


# --- compact checkpoints (committed between sessions) ----------------------------------------------------

from genprop_cli.training.trainer import (  # noqa: E402
    COMPACT_EMA, COMPACT_WEIGHTS, compact_checkpoint, compact_resume_note,
)


def test_a_compact_checkpoint_is_small_and_exports_the_same_adapter_in_fp16(davis, tmp_path):
    train(config(davis, tmp_path / "run", steps=2, ema_decay=0.5))
    full = latest_checkpoint(tmp_path / "run")
    compact = compact_checkpoint(full, tmp_path / "compact" / "checkpoints" / full.name)
    assert sorted(p.name for p in compact.iterdir()) == sorted(
        [COMPACT_WEIGHTS, COMPACT_EMA, "scheduler.bin", "trainer_state.json"])
    size = sum(p.stat().st_size for p in compact.iterdir())
    assert size < sum(p.stat().st_size for p in full.iterdir()) / 3  # no optimizer moments; fp16
    for use_ema in (True, False):
        a = load_file(str(export_checkpoint(full, tmp_path / f"full-{use_ema}.safetensors", use_ema=use_ema)))
        b = load_file(str(export_checkpoint(compact, tmp_path / f"compact-{use_ema}.safetensors", use_ema=use_ema)))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    ema = load_file(str(compact / COMPACT_EMA))
    assert all(v.dtype == torch.float16 for v in ema.values() if v.is_floating_point())


def test_a_run_resumes_from_a_compact_checkpoint_without_its_init_file_and_keeps_its_schedule(davis, tmp_path):
    first = train(config(davis, tmp_path / "first", steps=2))
    init = tmp_path / "init.safetensors"
    shutil.copy(first.adapter, init)
    second = dict(init_adapter=str(init), ema_decay=0.5, warmup_steps=4)
    train(config(davis, tmp_path / "straight", **second))
    train(config(davis, tmp_path / "half", steps=2, **second))
    assert compact_resume_note(config(davis, tmp_path / "resumed", **second)) is None
    compact_checkpoint(latest_checkpoint(tmp_path / "half"), tmp_path / "resumed" / "checkpoints" / "step-00000002")
    init.unlink()  # a committed compact checkpoint does not need the run's init file
    note = compact_resume_note(config(davis, tmp_path / "resumed", **second))
    assert "step-00000002" in note and "AdamW starts afresh" in note

    resumed = train(config(davis, tmp_path / "resumed", **second))
    assert resumed.resumed_from == 2 and resumed.fresh_optimizer
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == [3, 4]
    # The LR schedule goes on (warm-up at 3 and 4 of 4) and the first resumed step sees the same weights
    # (to fp16) and the same data as the uninterrupted run.
    assert [r["lr"] for r in b] == pytest.approx([r["lr"] for r in a[2:]])
    assert b[0]["total"] == pytest.approx(a[2]["total"], rel=2e-3)
    # The EMA went on from the checkpoint's: the export is near the uninterrupted run's, not the raw weights.
    straight, exported = load_file(str(tmp_path / "straight" / "adapter.safetensors")), load_file(resumed.adapter)
    for k in straight:
        torch.testing.assert_close(exported[k], straight[k], rtol=0.05, atol=2e-3, msg=k)


def test_bf16_on_a_cpu_that_only_emulates_it_is_refused_with_the_option_that_fixes_it(davis, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from genprop_cli.cli import app

    monkeypatch.setattr("genprop_cli.hardware.cpu_has_native_bf16", lambda: False)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(davis), "--model", "random-tiny", "--steps", "2",
                                      "--frames", "4", "--width", "32", "--height", "32", "--output", str(out),
                                      "--mixed-precision", "bf16"])  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output  # no "training ..." line before it
    assert "AVX512-BF16 or AMX" in lines[0] and "--mixed-precision no" in lines[0]
    assert not out.exists()  # refused before anything was written

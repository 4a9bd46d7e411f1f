"""scripts/build_toy.py's progress: what a session commits (compact, the furthest stage only) restores into an
empty build folder, and the interrupted stage resumes there without the stages before it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from vis_datasets import scene, write_davis

from genprop_cli.training.trainer import COMPACT_WEIGHTS, TrainConfig, latest_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_toy():
    spec = importlib.util.spec_from_file_location("build_toy", ROOT / "scripts" / "build_toy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_toy"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    return write_davis(tmp_path_factory.mktemp("davis"), {f"seq{i}": scene(frames=10, size=(48, 32), seed=i) for i in range(2)})


def stage_config(data: Path, output: Path, steps: int) -> TrainConfig:
    return TrainConfig.from_dict(dict(data=str(data), output=str(output), model="random-tiny", steps=steps, frames=4,
                                      width=32, height=32, save_every=2, lr=1e-3, ema_decay=0.5))  # fmt: skip


def test_saved_progress_keeps_only_the_furthest_stage_and_resumes_from_an_empty_build(build_toy, davis, tmp_path):
    work, progress, fresh = tmp_path / "work", tmp_path / "progress", tmp_path / "fresh"
    first = train(stage_config(davis, build_toy.stage_folder(work, "no-mpd", 1), steps=2))
    stopped = Path(train(stage_config(davis, build_toy.stage_folder(work, "no-mpd", 2), steps=2)).output)
    for name in ("adapter.safetensors", "summary.json"):  # as if stopped after its step-2 checkpoint of 4
        (stopped / name).unlink()
    (work / "timings.json").write_text(json.dumps({"adapter-no-mpd-stage1": 1.0}))

    build_toy.save_progress(work, ["no-mpd", "no-ra"], progress)
    kept = sorted(str(p.relative_to(progress)) for p in progress.rglob("*") if p.is_file())
    assert kept == [
        "adapter-no-mpd-stage2/checkpoints/step-00000002/adapter.safetensors",
        "adapter-no-mpd-stage2/checkpoints/step-00000002/ema.safetensors",
        "adapter-no-mpd-stage2/checkpoints/step-00000002/scheduler.bin",
        "adapter-no-mpd-stage2/checkpoints/step-00000002/trainer_state.json",
        "adapter-no-mpd-stage2/log.jsonl",
        "timings.json",
    ]

    # Into a build that still has the full checkpoint of that step, nothing of the compact one is mixed in.
    build_toy.restore_progress(work, progress)
    assert not (latest_checkpoint(stopped) / COMPACT_WEIGHTS).exists()

    build_toy.restore_progress(fresh, progress)
    assert build_toy.furthest_stage(fresh, "no-mpd") == 2 and build_toy.furthest_stage(fresh, "no-ra") == 0
    assert json.loads((fresh / "timings.json").read_text()) == {"adapter-no-mpd-stage1": 1.0}
    resumed = train(stage_config(davis, build_toy.stage_folder(fresh, "no-mpd", 2), steps=4))
    assert resumed.resumed_from == 2 and resumed.fresh_optimizer
    assert [json.loads(line)["step"] for line in (Path(resumed.output) / "log.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4]
    assert not (latest_checkpoint(Path(resumed.output)) / COMPACT_WEIGHTS).exists()  # a full one again

    # Once the stage is finished, its fp16 export replaces the checkpoint.
    build_toy.save_progress(fresh, ["no-mpd"], progress)
    assert sorted(p.name for p in (progress / "adapter-no-mpd-stage2").iterdir()) == [
        "adapter.safetensors", "log.jsonl", "summary.json"]
    saved, exported = load_file(progress / "adapter-no-mpd-stage2" / "adapter.safetensors"), load_file(resumed.adapter)
    for key, value in exported.items():
        assert saved[key].dtype == torch.float16
        torch.testing.assert_close(saved[key].float(), value, rtol=1e-3, atol=1e-4, msg=key)
    assert first.adapter  # stage 1 never had to be kept
    shutil.rmtree(work)
    assert build_toy.furthest_stage(work, "no-mpd") == 0

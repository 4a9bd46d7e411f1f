"""Resuming interrupted renders (resume.py + api.render): a rerun after Ctrl-C or `kill -9` at a random chunk
gives exactly the uninterrupted output; a work folder from another run is refused, naming what differs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clips import make_clip, pattern_frame
from genprop_cli.api import GenProp, OutputOptions, RunRequest, render
from genprop_cli.cli import app
from genprop_cli.config import PropagationOptions, Task
from genprop_cli.errors import OutputError
from genprop_cli.resume import ChunkStore, default_work_dir

W, H = 64, 48
runner = CliRunner()


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("resume")
    video = make_clip(d / "clip.mp4", width=W, height=H, frames=96, audio="aac")  # 4 chunks of 32 sharing 8
    Image.fromarray(pattern_frame(0, W, H)[:, ::-1].copy()).save(d / "edited.png")
    return video, d / "edited.png"


@pytest.fixture(scope="module")
def model() -> GenProp:
    return GenProp.load("random-tiny", device="cpu")


OPTIONS = PropagationOptions(task=Task.REMOVE, steps=2, seed=7)


def request(inputs: tuple[Path, Path], output: Path, options: PropagationOptions = OPTIONS, **outputs) -> RunRequest:
    video, frame = inputs
    return RunRequest(video=video, first_frames=(frame,), options=options, outputs=OutputOptions(output=output, **outputs))


@pytest.fixture(scope="module")
def reference(inputs, model, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref") / "ref.mp4"
    render(model, request(inputs, out))
    return decoded(out)


def test_store_round_trips_exactly_and_ignores_a_damaged_record(tmp_path):
    store = ChunkStore.open(tmp_path / "w", {"input": "a"})
    latents, mask = torch.randn(4, 3, 5, 5, dtype=torch.float16), torch.rand(3, 1, 5, 5)
    store.save(0, latents, mask)
    record = ChunkStore.open(tmp_path / "w", {"input": "a"}).load(0)
    assert torch.equal(record.latents, latents) and record.latents.dtype == torch.float16
    assert torch.equal(record.mask, mask)
    store.path(1).write_bytes(b"half a file")
    assert store.load(1) is None and not store.path(1).exists()  # redone, never trusted
    assert store.done() == 1


def test_a_work_folder_from_another_run_is_refused_naming_what_differs(tmp_path):
    ChunkStore.open(tmp_path / "w", {"input": "a", "options": {"seed": 1, "steps": 4}})
    with pytest.raises(OutputError, match=r"another run \(options\.seed differ\)"):
        ChunkStore.open(tmp_path / "w", {"input": "a", "options": {"seed": 2, "steps": 4}})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(OutputError, match="not a genprop work folder"):
        ChunkStore.open(tmp_path / "junk", {"input": "a"})


def test_resume_after_an_interruption_replays_finished_chunks_and_matches(inputs, model, reference, tmp_path, monkeypatch):
    out = tmp_path / "out.mp4"

    def interrupt_in_chunk_3(event):
        if event.chunk == 3 and event.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(model, request(inputs, out), on_progress=interrupt_in_chunk_3)
    work = default_work_dir(out)
    assert not out.exists() and sorted(p.name for p in work.iterdir()) == [
        "chunk-00000.safetensors", "chunk-00001.safetensors", "manifest.json"
    ]  # fmt: skip
    sampled = []
    original = model.pipeline.sample_chunk
    monkeypatch.setattr(model.pipeline, "sample_chunk", lambda **kw: sampled.append(1) or original(**kw))
    result = render(model, request(inputs, out))
    assert result.resumed_chunks == 2 and len(sampled) == 2  # chunks 3 and 4 only
    assert np.array_equal(decoded(out), reference)
    assert not work.exists()  # removed on success


def test_keep_work_and_a_changed_option_on_rerun(inputs, model, tmp_path):
    out = tmp_path / "out.mp4"
    render(model, request(inputs, out, keep_work=True, work_dir=tmp_path / "work"))
    assert (tmp_path / "work" / "chunk-00003.safetensors").is_file()
    with pytest.raises(OutputError, match="options.seed"):
        render(model, request(inputs, tmp_path / "out2.mp4", PropagationOptions(task=Task.REMOVE, steps=2, seed=8),
                              work_dir=tmp_path / "work"))  # fmt: skip
    assert not (tmp_path / "out2.mp4").exists()


def test_an_error_before_any_chunk_finishes_leaves_no_work_folder(inputs, model, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(Exception, match="no text conditioning"):
        render(model, request(inputs, out, PropagationOptions(task=Task.EDIT, prompt="x")))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_kill_9_at_a_random_chunk_then_the_same_command_gives_the_same_video(inputs, reference, tmp_path):
    video, frame = inputs
    out = tmp_path / "out.mp4"
    work = default_work_dir(out)
    command = [sys.executable, "-m", "genprop_cli", "remove", str(video), "-f", str(frame), "-o", str(out),
               "--model", "random-tiny", "--steps", "2", "--seed", "7", "-q"]  # fmt: skip
    kill_after = random.Random(os.environ.get("PYTEST_SEED", "0")).randint(1, 3)  # chunks finished when killed
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(list(work.glob("chunk-*.safetensors"))) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists()
    assert list(tmp_path.glob(".out.mp4.partial-*"))  # the killed writer's temp file is still there...
    finished = len(list(work.glob("chunk-*.safetensors")))
    assert finished >= kill_after
    rerun = runner.invoke(app, [*command[3:], "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["resumed_chunks"] == finished
    assert np.array_equal(decoded(out), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # ...and goes with the work folder

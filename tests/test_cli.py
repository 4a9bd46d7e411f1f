"""The `genprop` command end to end on the shipped random-tiny variant (offline), and every bad input:
one line on stderr, the documented exit code, no traceback, nothing half-written, the input untouched."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clips import audio_packets, make_audio_only, make_clip, make_text_file, make_truncated, pattern_frame
from genprop_cli.cli import app
from genprop_cli.config import Task

runner = CliRunner()
FRAMES, W, H = 40, 96, 64  # 40 frames: two chunks of 32 sharing 8


TASKS = {t.value for t in Task}


def run(*args: str, env: dict[str, str] | None = None):
    """The CLI on the random-weight variant (fast, and every code path), unless a test names a --model."""
    argv = list(map(str, args))
    if argv and argv[0] in TASKS and not {"--model", "-m", "--variant"} & set(argv):
        argv += ["--model", "random-tiny"]
    return runner.invoke(app, argv, env=env)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    make_clip(d / "clip.mp4", width=W, height=H, frames=FRAMES, audio="aac")
    Image.fromarray(pattern_frame(0, W, H)[:, ::-1].copy()).save(d / "edited.png")
    return d


@pytest.fixture
def clip(workdir, tmp_path) -> tuple[Path, Path]:
    """A fresh copy of the clip and the edited frame in this test's own folder."""
    video, frame = tmp_path / "clip.mp4", tmp_path / "edited.png"
    video.write_bytes((workdir / "clip.mp4").read_bytes())
    frame.write_bytes((workdir / "edited.png").read_bytes())
    return video, frame


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


@pytest.mark.parametrize("task", ["edit", "remove", "insert", "track"])
def test_each_task_end_to_end_keeps_length_timing_size_and_audio(clip, task):
    video, frame = clip
    before = digest(video)
    result = run(task, video, "--first-frame", frame, "--json", "--steps", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    output = Path(summary["output"])
    assert output == video.with_name(f"clip.genprop-{task}.mp4") and output.exists()
    assert summary["status"] == "ok" and summary["task"] == task and summary["variant"] == "random-tiny"
    assert summary["frames"] == FRAMES and summary["chunks"] == 2 and summary["steps"] == 2
    assert frame_times(output) == pytest.approx(frame_times(video), abs=1e-9)
    with av.open(str(output)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (W, H)
    assert audio_packets(output, 1) == audio_packets(video, 1)
    assert digest(video) == before, "the input must never be modified"
    assert "random, untrained weights" in result.stderr
    masks = summary["masks"]
    if task == "track":
        mask_files = sorted(Path(masks).glob("*.png"))
        assert len(mask_files) == FRAMES
        assert Image.open(mask_files[0]).size == (W, H) and Image.open(mask_files[0]).mode == "L"
    else:
        assert masks is None
    assert not list(video.parent.glob(".*partial*")), "no temporary files may be left behind"


def test_same_seed_gives_the_same_video_and_options_are_reported(clip, tmp_path):
    video, frame = clip
    outputs = []
    for name in ("a.mp4", "b.mp4"):
        result = run("edit", video, "-f", frame, "-o", tmp_path / name, "--seed", "7", "--steps", "1",
                     "--chunk", "32", "--overlap", "4", "--guidance", "3", "--json", "-q")
        assert result.exit_code == 0, result.output
        assert result.stderr == ""  # -q: nothing but errors
        summary = json.loads(result.stdout)
        assert (summary["seed"], summary["overlap"], summary["guidance"]) == (7, 4, 3.0)
        assert (summary["preserve"], summary["preserve_margin"], summary["preserve_threshold"]) == (False, 1, 0.5)
        with av.open(str(tmp_path / name)) as c:
            outputs.append(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_masks_option_and_mov_output(clip, tmp_path):
    video, frame = clip
    out = tmp_path / "result.mov"
    result = run("remove", video, "-f", frame, "-o", out, "--masks", tmp_path / "m", "--steps", "1", "--composite")
    assert result.exit_code == 0, result.output
    assert out.exists() and len(list((tmp_path / "m").glob("*.png"))) == FRAMES
    assert f"wrote {out}" in result.stderr


def test_version_and_models_list():
    assert run("--version").stdout.startswith("genprop ")
    listed = run("models", "list", "--json")
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.stdout)["variants"]}
    assert rows["random-tiny"]["adapter"] == "present"
    assert rows["svd-xt"]["adapter"] == "unpublished"


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_paragraphs_have_no_hard_line_breaks():
    """Rich help prints a line break inside a paragraph as it is, which tore `genprop --help`'s listing."""
    import inspect

    import typer.main

    broken = []
    for path, command in _commands(typer.main.get_command(app)):
        texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
        broken += [" ".join(path) for t in texts if any("\n" in p for p in inspect.cleandoc(t).split("\n\n"))]
    assert broken == []
    listing = run("--help").stdout
    assert "Train the SCE + MPD + task embedding on a video instance" in listing


# --- bad input -------------------------------------------------------------------------------------


def test_missing_input(clip, tmp_path):
    assert_one_line_error(run("remove", tmp_path / "nope.mp4", "-f", clip[1]), 3, "nope.mp4")


def test_not_a_video(clip, tmp_path):
    fake = make_text_file(tmp_path / "notes.mp4")
    assert_one_line_error(run("remove", fake, "-f", clip[1]), 3, "notes.mp4")


@pytest.mark.parametrize("faststart", [False, True], ids=["index-cut-off", "data-cut-off"])
def test_truncated_video(clip, tmp_path, faststart):
    whole = make_clip(tmp_path / "whole.mp4", width=W, height=H, frames=FRAMES, faststart=faststart)
    cut = make_truncated(whole, tmp_path / "cut.mp4", 0.5)
    assert_one_line_error(run("remove", cut, "-f", clip[1]), 3, "cut.mp4")
    assert not (tmp_path / "cut.genprop-remove.mp4").exists()


def test_no_video_stream(clip, tmp_path):
    audio = make_audio_only(tmp_path / "tone.m4a")
    assert_one_line_error(run("remove", audio, "-f", clip[1]), 3, "no video stream")


def test_zero_decodable_frames(clip, tmp_path):
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    assert_one_line_error(run("remove", empty, "-f", clip[1]), 3, "empty.mp4")


def test_unreadable_first_frame(clip, tmp_path):
    bad = tmp_path / "edited.png"
    bad.write_bytes(b"not an image at all")
    assert_one_line_error(run("remove", clip[0], "-f", bad), 3, "edited.png")


def test_first_frame_of_another_aspect_ratio(clip, tmp_path):
    square = tmp_path / "square.png"
    Image.new("RGB", (50, 50)).save(square)
    assert_one_line_error(run("remove", clip[0], "-f", square), 3, "50x50", f"{W}x{H}")


def test_first_frame_with_same_aspect_is_resized_and_said(clip, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(pattern_frame(0, W, H)).resize((W * 2, H * 2)).save(big)
    result = run("remove", clip[0], "-f", big, "--steps", "1", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 0, result.output
    assert "resized" in result.stderr


def test_output_exists_without_overwrite(clip):
    video, frame = clip
    existing = video.with_name("clip.genprop-remove.mp4")
    existing.write_bytes(b"precious")
    assert_one_line_error(run("remove", video, "-f", frame), 4, "--overwrite")
    assert existing.read_bytes() == b"precious"
    assert run("remove", video, "-f", frame, "--overwrite", "--steps", "1").exit_code == 0
    assert existing.read_bytes() != b"precious"


def test_output_folder_missing(clip, tmp_path):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "-o", tmp_path / "no" / "out.mp4"), 4, "no")


def test_output_same_as_input(clip):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "-o", clip[0], "--overwrite"), 4)


def test_unknown_variant(clip):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "--model", "nonesuch"), 5, "nonesuch", "random-tiny")


def test_json_errors_are_a_json_document_on_stdout(clip):
    result = run("remove", clip[0], "-f", clip[1], "--model", "nonesuch", "--json")
    assert_one_line_error(result, 5, "nonesuch")
    doc = json.loads(result.stdout)
    assert doc["status"] == "error" and doc["exit_code"] == 5 and "nonesuch" in doc["error"]


def test_variant_without_adapter_weights(clip):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "--model", "svd-xt"), 5, "genprop train", "--adapter")


def test_adapter_hash_mismatch(clip, tmp_path):
    registry = Path(__file__).resolve().parents[1] / "weights.toml"
    text = registry.read_text()
    start = text.index('sha256 = "7de1')
    tampered = text[: start + 10] + ("0" if text[start + 10] != "0" else "1") + text[start + 11 :]
    assets = Path(__file__).resolve().parents[1] / "src/genprop_cli/assets"
    fake = tmp_path / "weights.toml"
    fake.write_text(tampered)
    result = run("remove", clip[0], "-f", clip[1], env={"GENPROP_REGISTRY": str(fake)})
    assert assets.exists()
    assert_one_line_error(result, 5, "sha256", "adapter.safetensors")


def test_adapter_override_that_is_not_safetensors(clip, tmp_path):
    pickle = tmp_path / "adapter.pt"
    pickle.write_bytes(b"\x80\x04")
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "--adapter", pickle), 5, "safetensors")


def test_cuda_without_cuda(clip):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "--device", "cuda"), 6, "CUDA")


@pytest.mark.parametrize("chunk", ["16", "48", "256"])
def test_chunk_not_allowed(clip, chunk):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "--chunk", chunk), 2, "--chunk", "32, 64, 128")


@pytest.mark.parametrize("overlap", ["32", "40", "0"])
def test_overlap_not_smaller_than_chunk(clip, overlap):
    assert_one_line_error(run("remove", clip[0], "-f", clip[1], "--overlap", overlap), 2, "--overlap")


def test_preserve_can_be_set_either_way_and_its_margin_and_threshold_are_checked(clip, tmp_path):
    out = tmp_path / "p.mp4"
    on = run("edit", clip[0], "-f", clip[1], "-o", out, "--steps", "1", "--preserve", "--preserve-margin", "0",
             "--preserve-threshold", "0.3", "--json", "-q")  # fmt: skip
    assert on.exit_code == 0, on.output
    summary = json.loads(on.stdout)
    assert (summary["preserve"], summary["preserve_margin"], summary["preserve_threshold"]) == (True, 0, 0.3)
    off = run("edit", clip[0], "-f", clip[1], "-o", out, "-y", "--steps", "1", "--no-preserve", "--json", "-q")
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["preserve"] is False
    assert_one_line_error(run("edit", clip[0], "-f", clip[1], "--preserve-margin", "-1"), 2, "--preserve-margin")
    for bad in ("0", "1", "1.5"):
        assert_one_line_error(run("edit", clip[0], "-f", clip[1], "--preserve-threshold", bad), 2, "--preserve-threshold")


def test_ctrl_c_mid_run_leaves_no_output(tmp_path):
    video = make_clip(tmp_path / "long.mp4", width=W, height=H, frames=200, audio="aac")
    frame = tmp_path / "edited.png"
    Image.fromarray(pattern_frame(0, W, H)).save(frame)
    out = tmp_path / "out.mp4"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genprop_cli", "remove", str(video), "-f", str(frame), "-o", str(out), "--steps", "8", "--model", "random-tiny"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        # A shell that runs pytest in the background hands SIGINT down ignored, and Python then installs no
        # KeyboardInterrupt handler: the child gets the default, as under a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.mp4.partial*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # wait until the writer has started, i.e. mid-run
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    # Nothing half-written; at most the hidden work folder with the chunks finished so far (for a rerun).
    assert {p.name for p in tmp_path.iterdir()} - {".out.mp4.genprop-work"} == {"edited.png", "long.mp4"}
    work = tmp_path / ".out.mp4.genprop-work"
    if work.exists():
        assert all(p.name == "manifest.json" or p.name.startswith("chunk-") for p in work.iterdir())


def test_preview_contact_sheet_shows_input_output_and_mask(clip, tmp_path):
    video, frame = clip
    sheet_path = tmp_path / "preview.png"
    result = run("edit", video, "-f", frame, "-o", tmp_path / "o.mp4", "--preview", sheet_path, "--steps", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["preview"] == str(sheet_path)
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    thumb_h = round(H * 256 / W)
    assert sheet.shape == (4 * thumb_h + 3 * 4, 3 * 256 + 2 * 4, 3)  # 4 sampled frames, 3 columns, 4 px gaps
    first_input = np.asarray(Image.fromarray(pattern_frame(0, W, H)).resize((256, thumb_h), Image.Resampling.BILINEAR))
    assert np.abs(sheet[:thumb_h, :256].astype(int) - first_input.astype(int)).mean() < 4  # decoded input ~ source
    bad = run("edit", video, "-f", frame, "-o", tmp_path / "o2.mp4", "--preview", tmp_path / "p.jpg")
    assert_one_line_error(bad, 4, "preview")


def test_pix_fmt_yuv444p_keeps_an_odd_size_and_a_bad_one_is_one_early_line(tmp_path):
    video = make_clip(tmp_path / "odd.mp4", width=65, height=49, frames=6, audio=None)
    frame = tmp_path / "edited.png"
    Image.fromarray(pattern_frame(0, 65, 49)).save(frame)
    out = tmp_path / "out.mkv"
    result = run("edit", video, "-f", frame, "-o", out, "--steps", "1", "--pix-fmt", "yuv444p", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["width"], doc["height"]) == (65, 49) and not any("padded" in w for w in doc["warnings"])
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height, stream.codec_context.pix_fmt) == (65, 49, "yuv444p")
    bad = run("edit", video, "-f", frame, "-o", tmp_path / "bad.mp4", "--pix-fmt", "rgb24")
    assert_one_line_error(bad, 2, "--pix-fmt must be one of")

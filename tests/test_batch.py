"""`genprop batch` and `genprop_cli.batch`: listing jobs (jobs files, folders, globs), running them with the
model loaded once, per-job failures that do not stop the others, sharding across processes, summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest
from clips import make_clip, pattern_frame
from PIL import Image
from typer.testing import CliRunner

from genprop_cli import batch
from genprop_cli.batch import BatchSummary, Job, JobsError, World, parse_jobs, run_batch
from genprop_cli.cli import app
from genprop_cli.config import OutputOptions, PropagationOptions, RunSettings, Task
from genprop_cli.errors import OptionError, VideoReadError

runner = CliRunner()
FRAMES, W, H = 6, 64, 48  # one chunk: the cheapest real run


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


# --- jobs files ------------------------------------------------------------------------------------


def test_jobs_file_comments_quotes_relative_paths_defaults_and_options(tmp_path):
    jobs = tmp_path / "lists" / "jobs.txt"
    jobs.parent.mkdir()
    jobs.write_text(
        "# a comment line\n"
        "\n"
        "clips/a.mp4   frames/a.png   remove\n"
        "'clips/with space.mp4' \"frames/with space.png\" EDIT out/b.mov  # trailing comment\n"
        f"{tmp_path}/abs.mp4 abs.png - seed=7 steps=2 prompt='a red car' composite=yes\n"
        "c.mp4 c.png\n"
    )
    parsed = parse_jobs(jobs, task="track")
    base = jobs.parent
    assert [j.video for j in parsed] == [base / "clips/a.mp4", base / "clips/with space.mp4", tmp_path / "abs.mp4", base / "c.mp4"]
    assert [j.first_frame for j in parsed] == [base / "frames/a.png", base / "frames/with space.png", base / "abs.png", base / "c.png"]
    assert [j.task for j in parsed] == [Task.REMOVE, Task.EDIT, Task.TRACK, Task.TRACK]
    assert parsed[0].output == base / "clips/a.genprop-remove.mp4"  # default: beside the input
    assert parsed[1].output == base / "out/b.mov"
    assert dict(parsed[2].values) == {"seed": 7, "steps": 2, "prompt": "a red car", "composite": True}
    assert [j.origin for j in parsed] == ["jobs.txt:3", "jobs.txt:4", "jobs.txt:5", "jobs.txt:6"]
    opts = batch.job_request(parsed[2], RunSettings(options=PropagationOptions(seed=1, chunk=64))).options
    assert (opts.task, opts.seed, opts.steps, opts.chunk, opts.composite) == (Task.TRACK, 7, 2, 64, True)


def test_tsv_jobs_file_takes_unquoted_spaces(tmp_path):
    jobs = tmp_path / "jobs.tsv"
    jobs.write_text("# video\tframe\ttask\nmy clip.mp4\tmy frame.png\tinsert\n")
    (job,) = parse_jobs(jobs)
    assert (job.video, job.first_frame, job.task) == (tmp_path / "my clip.mp4", tmp_path / "my frame.png", Task.INSERT)


def test_output_dir_applies_to_jobs_without_their_own_output(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a.mp4 a.png edit\nb.mp4 b.png edit b-out.mp4\n")
    a, b = parse_jobs(jobs, output_dir=tmp_path / "out")
    assert a.output == tmp_path / "out" / "a.genprop-edit.mp4"
    assert b.output == tmp_path / "b-out.mp4"


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("a.mp4 a.png paint", "unknown task 'paint'"),
        ("a.mp4", "got 1 field(s)"),
        ("a.mp4 a.png edit o.mp4 extra", "got 5 field(s)"),
        ("a.mp4 a.png", "no task on this line"),
        ("'a.mp4 a.png edit", "No closing quotation"),
        ("a.mp4 a.png edit seed=x", "seed='x' is not a valid seed"),
        ("a.mp4 a.png edit colour=red", "unknown job option 'colour'"),
        ("a.mp4 a.png edit seed=1 o.mp4", "options come last"),
    ],
)
def test_bad_jobs_line_is_reported_with_its_line_number(tmp_path, line, fragment):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"# header\nok.mp4 ok.png edit\n{line}\n")
    with pytest.raises(JobsError) as info:
        parse_jobs(jobs)
    assert "jobs.txt:3: " in str(info.value) and fragment in str(info.value)


def test_every_bad_line_is_counted(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a.mp4\nb.mp4\nc.mp4 c.png edit\nd.mp4\n")
    with pytest.raises(JobsError, match=r"jobs.txt:1: .*\(and 2 more bad line\(s\)\)"):
        parse_jobs(jobs)


def test_jobs_spec_that_is_nothing_usable(tmp_path):
    with pytest.raises(JobsError, match="does not exist"):
        parse_jobs(tmp_path / "nope.txt")
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(JobsError, match="not a jobs file"):
        parse_jobs(tmp_path / "notes.md")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(JobsError, match="lists no jobs"):
        parse_jobs(tmp_path / "empty.txt")
    with pytest.raises(JobsError, match="no input videos match"):
        parse_jobs(str(tmp_path / "*.mp4"))


# --- folders and globs -----------------------------------------------------------------------------


def test_folder_pairs_videos_with_their_edited_frames(tmp_path):
    for name in ("a.mp4", "a.edited.png", "a.png",  # .edited wins over the bare name
                 "b.mov", "b.jpg",
                 "c.mp4", "c.remove.png", "c.track.webp",  # one job per task-named frame
                 "a.genprop-edit.mp4", ".a.mp4.partial-1-2.mp4", "notes.txt"):  # outputs, temp files: skipped
        touch(tmp_path / name)
    parsed = parse_jobs(tmp_path, task="insert")
    assert [(j.video.name, j.first_frame.name, j.task) for j in parsed] == [
        ("a.mp4", "a.edited.png", Task.INSERT),
        ("b.mov", "b.jpg", Task.INSERT),
        ("c.mp4", "c.remove.png", Task.REMOVE),
        ("c.mp4", "c.track.webp", Task.TRACK),
    ]
    assert [j.output.name for j in parsed] == ["a.genprop-insert.mp4", "b.genprop-insert.mov", "c.genprop-remove.mp4", "c.genprop-track.mp4"]


def test_folder_without_task_or_frames_is_an_error_before_anything_runs(tmp_path):
    touch(tmp_path / "a.mp4"), touch(tmp_path / "a.png")
    with pytest.raises(JobsError, match="no task for a.mp4: pass --task"):
        parse_jobs(tmp_path)
    touch(tmp_path / "lonely.mp4")
    with pytest.raises(JobsError, match="no edited first frame for lonely.mp4"):
        parse_jobs(tmp_path, task="edit")
    touch(tmp_path / "stills" / "x.png")
    with pytest.raises(JobsError, match="holds no input videos"):
        parse_jobs(tmp_path / "stills")


def test_glob_and_single_video(tmp_path):
    for name in ("x/one.mp4", "x/one.png", "x/two.mp4", "x/two.png", "x/two.genprop-edit.mp4", "y/three.mp4", "y/three.png"):
        touch(tmp_path / name)
    parsed = parse_jobs(str(tmp_path / "*" / "t*.mp4"), task="edit", output_dir=tmp_path / "out")
    assert [j.video.name for j in parsed] == ["two.mp4", "three.mp4"]  # sorted by path: x/ before y/
    assert {j.output for j in parsed} == {tmp_path / "out/two.genprop-edit.mp4", tmp_path / "out/three.genprop-edit.mp4"}
    everything = parse_jobs(str(tmp_path / "**" / "*.mp4"), task="edit")
    assert sorted(j.video.name for j in everything) == ["one.mp4", "three.mp4", "two.mp4"]
    (single,) = parse_jobs(tmp_path / "x" / "one.mp4", task="remove")
    assert (single.first_frame.name, single.task) == ("one.png", Task.REMOVE)


# --- processes and sharding ------------------------------------------------------------------------


def test_world_from_launcher_environment():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(OptionError):
        World.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(OptionError):
        World.from_env({"RANK": "x"})
    assert World(1, 2, 1).device("cpu") == "cpu" and World(1, 2, 1).device("cuda:0") == "cuda:0"


@pytest.mark.parametrize("world_size", [1, 2, 3, 7, 12])
def test_shards_are_disjoint_and_cover_every_job(world_size):
    shards = [World(rank, world_size).shard(10) for rank in range(world_size)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(10)) and len(flat) == len(set(flat))
    assert all(i % world_size == rank for rank, s in enumerate(shards) for i in s)


class FakeModel:
    name = "fake"


def fake_jobs(tmp_path: Path, n: int) -> list[Job]:
    return [Job(tmp_path / f"v{i}.mp4", tmp_path / f"v{i}.png", Task.EDIT) for i in range(n)]


def test_run_batch_shards_by_rank_and_merges_the_parts(tmp_path, monkeypatch):
    rendered: dict[int, list[str]] = {}

    def fake_render(model, request, **kwargs):
        rendered.setdefault(request.options.seed, []).append(request.video.name)  # the seed tells the ranks apart
        if request.video.name == "v4.mp4":
            raise VideoReadError(f"{request.video} is broken")
        return type("R", (), {"frames": 3, "warnings": []})()

    monkeypatch.setattr(batch, "render_job", fake_render)
    jobs = fake_jobs(tmp_path, 8)
    summary_path = tmp_path / "summary.json"
    merged = []
    for rank in range(3):
        world = World(rank, 3)
        part = run_batch(FakeModel(), jobs, RunSettings(options=PropagationOptions(seed=rank)), world=world)
        assert [r.index for r in part.results] == world.shard(8) and {r.rank for r in part.results} == {rank}
        merged.append(batch.collect_summary(part, summary_path, batch_id="t1", world=world))
    assert merged[:2] == [None, None] and merged[2] is not None  # the last one to finish merges
    names = [n for rank in range(3) for n in rendered[rank]]
    assert sorted(names) == sorted(f"v{i}.mp4" for i in range(8)) and len(set(names)) == 8
    doc = json.loads(summary_path.read_text())
    assert (doc["jobs"], doc["ok"], doc["failed"], doc["world_size"], doc["status"]) == (8, 7, 1, 3, "failed")
    assert [r["index"] for r in doc["results"]] == list(range(8))
    (failure,) = [r for r in doc["results"] if r["status"] == "failed"]
    assert failure["video"].endswith("v4.mp4") and "is broken" in failure["error"] and failure["exit_code"] == 3
    assert not list(tmp_path.glob(".summary.json.parts-*")), "parts are removed once merged"
    assert BatchSummary.from_dict(doc).to_dict() == doc


def test_internal_errors_are_recorded_but_ctrl_c_stops_the_batch(tmp_path, monkeypatch):
    def fake_render(model, request, **kwargs):
        if request.video.name == "v0.mp4":
            raise RuntimeError("boom")
        if request.video.name == "v2.mp4":
            raise KeyboardInterrupt
        return type("R", (), {"frames": 1, "warnings": ["note"]})()

    monkeypatch.setattr(batch, "render_job", fake_render)
    seen = []
    summary = run_batch(FakeModel(), fake_jobs(tmp_path, 2), on_job=seen.append)
    assert [r.status for r in seen] == ["failed", "ok"] and summary.failed == 1
    assert summary.failures[0].error == "internal error: RuntimeError: boom" and summary.failures[0].exit_code == 1
    assert isinstance(summary.failures[0].exception, RuntimeError)
    json.loads(summary.to_json())  # the exception is not serialised
    with pytest.raises(KeyboardInterrupt):
        run_batch(FakeModel(), fake_jobs(tmp_path, 3))


def test_clashing_outputs_and_skip_existing(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "render_job", lambda *a, **k: type("R", (), {"frames": 1, "warnings": []})())
    same = tmp_path / "same.mp4"
    jobs = [Job(tmp_path / "a.mp4", tmp_path / "a.png", Task.EDIT, output=same),
            Job(tmp_path / "b.mp4", tmp_path / "b.png", Task.EDIT, output=same)]
    summary = run_batch(FakeModel(), jobs)
    assert [r.status for r in summary.results] == ["ok", "failed"]
    assert "also job 1's output" in summary.results[1].error
    (tmp_path / "a.genprop-edit.mp4").write_bytes(b"done before")
    resumed = run_batch(FakeModel(), fake_jobs(tmp_path, 0) + [Job(tmp_path / "a.mp4", tmp_path / "a.png", Task.EDIT)], skip_existing=True)
    assert [r.status for r in resumed.results] == ["skipped"] and resumed.status == "ok"
    with pytest.raises(OptionError):
        run_batch(FakeModel(), jobs, RunSettings(outputs=OutputOptions(overwrite=True)), skip_existing=True)


# --- the command, end to end on random-tiny --------------------------------------------------------


@pytest.fixture
def three_jobs(tmp_path) -> Path:
    """Two good clips (one in a folder with a space) and a zero-byte one, listed in a jobs file."""
    (tmp_path / "sub dir").mkdir()
    for name in ("a.mp4", "sub dir/b.mp4"):
        make_clip(tmp_path / name, width=W, height=H, frames=FRAMES, audio=None)
        Image.fromarray(pattern_frame(0, W, H)[:, ::-1].copy()).save((tmp_path / name).with_suffix(".png"))
    touch(tmp_path / "empty.mp4")
    Image.fromarray(pattern_frame(0, W, H)).save(tmp_path / "empty.png")
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a.mp4 a.png edit\n'sub dir/b.mp4' 'sub dir/b.png' track\nempty.mp4 empty.png remove\n")
    return jobs


def test_batch_command_runs_every_job_with_one_model_and_reports_the_failure(three_jobs, tmp_path, monkeypatch):
    from genprop_cli import api

    loads = []
    real_load = api.GenProp.load.__func__

    def counting_load(cls, *args, **kwargs):
        loads.append(kwargs.get("device"))
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(api.GenProp, "load", classmethod(counting_load))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GENPROP_BATCH_ID"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(three_jobs), "--model", "random-tiny", "--steps", "1", "--device", "cpu",
                                 "--output-dir", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert len(loads) == 1, "the model is loaded once for the whole batch"
    doc = json.loads(result.stdout)
    assert (doc["jobs"], doc["ok"], doc["failed"], doc["status"], doc["variant"]) == (3, 2, 1, "failed", "random-tiny")
    assert decoded_frames(out / "a.genprop-edit.mp4") == FRAMES
    assert decoded_frames(out / "b.genprop-track.mp4") == FRAMES
    assert len(list((out / "b.genprop-track.masks").glob("*.png"))) == FRAMES  # track writes its masks
    (failed,) = [r for r in doc["results"] if r["status"] == "failed"]
    assert failed["video"].endswith("empty.mp4") and "empty" in failed["error"] and failed["origin"] == "jobs.txt:3"
    assert failed["exit_code"] == 3
    assert not (out / "empty.genprop-remove.mp4").exists()
    assert json.loads((out / "genprop-batch.json").read_text()) == doc  # the summary file is the same document
    assert "FAILED" in result.stderr and "1 failed of 3 job(s)" in result.stderr and "jobs.txt:3" in result.stderr
    assert "Traceback" not in result.output

    again = runner.invoke(app, ["batch", str(three_jobs), "-m", "random-tiny", "--steps", "1", "-O", str(out),
                                "--skip-existing", "-q", "--summary", str(tmp_path / "s.json")])  # fmt: skip
    assert again.exit_code == 1  # the empty clip still fails; the two done ones are skipped
    resumed = json.loads((tmp_path / "s.json").read_text())
    assert [r["status"] for r in resumed["results"]] == ["skipped", "skipped", "failed"]
    assert "[3/3] FAILED" in again.stderr and "[1/3]" not in again.stderr  # -q: only failures and the tally


def test_batch_command_all_ok_exits_zero_and_bad_jobs_file_is_one_line(three_jobs, tmp_path):
    (tmp_path / "jobs.txt").write_text("a.mp4 a.png remove\n")
    ok = runner.invoke(app, ["batch", str(three_jobs), "-m", "random-tiny", "--steps", "1", "-q"])
    assert ok.exit_code == 0, ok.output
    assert ok.stderr == "" and (tmp_path / "a.genprop-remove.mp4").exists()
    assert json.loads((tmp_path / "jobs.genprop-batch.json").read_text())["ok"] == 1
    no_folder = runner.invoke(app, ["batch", str(three_jobs), "-m", "random-tiny", "--summary", str(tmp_path / "no" / "s.json")])
    assert no_folder.exit_code == 4 and "summary folder" in no_folder.stderr  # refused before any job runs
    (tmp_path / "jobs.txt").write_text("a.mp4 a.png remove\na.mp4 a.png paint\n")
    bad = runner.invoke(app, ["batch", str(three_jobs), "-m", "random-tiny"])
    assert bad.exit_code == 3 and len(bad.stderr.strip().splitlines()) == 1 and "jobs.txt:2" in bad.stderr


@pytest.mark.slow
def test_torchrun_two_processes_split_the_jobs_and_merge_one_summary(three_jobs, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GENPROP_BATCH_ID", None)
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "genprop_cli", "batch", str(three_jobs),
         "-m", "random-tiny", "--steps", "1", "--json"],
        check=False, capture_output=True, text=True, env=env, timeout=500,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stderr  # one job fails, so one process exits 1
    doc = json.loads(proc.stdout)  # exactly one JSON document: the merged summary
    assert (doc["world_size"], doc["ok"], doc["failed"]) == (2, 2, 1)
    assert [r["rank"] for r in doc["results"]] == [0, 1, 0]
    assert decoded_frames(tmp_path / "a.genprop-edit.mp4") == FRAMES
    assert decoded_frames(tmp_path / "sub dir" / "b.genprop-track.mp4") == FRAMES
    assert not list(tmp_path.glob(".jobs.genprop-batch.json.parts-*"))


def test_a_job_can_carry_positions_and_is_rendered_over_that_range_alone(three_jobs, tmp_path):
    (tmp_path / "jobs.txt").write_text("a.mp4 a.png edit trimmed.mp4 start=2 end=6\n"
                                       "a.mp4 a.png edit spliced.mp4 start=2 end=6 splice=yes steps=1 at=4\n"
                                       "a.mp4 a.png edit two.mp4 at=0 at=4 first_frame=a.png pix_fmt=yuv444p\n")
    (trimmed, spliced, two) = parse_jobs(three_jobs)
    assert dict(spliced.values) == {"start": "2", "end": "6", "splice": True, "steps": 1, "at": ("4",)}
    result = runner.invoke(app, ["batch", str(three_jobs), "-m", "random-tiny", "--steps", "1", "-q", "--json"])
    assert result.exit_code == 0, result.output
    assert decoded_frames(tmp_path / "trimmed.mp4") == 4  # frames 2..5 alone
    assert decoded_frames(tmp_path / "spliced.mp4") == FRAMES  # the whole clip, the range replaced
    assert decoded_frames(tmp_path / "two.mp4") == FRAMES  # two keyframes, as `genprop edit --at 0 --at 4` takes them
    with av.open(str(tmp_path / "two.mp4")) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv444p"
    with pytest.raises(JobsError, match="unknown job option 'from'"):
        (tmp_path / "bad.txt").write_text("a.mp4 a.png edit from=3\n")
        parse_jobs(tmp_path / "bad.txt")


def test_a_jobs_line_takes_every_option_a_task_command_does(tmp_path):
    """Keys come from the same config fields as the task commands' flags: several keyframes (at= with a
    first_frame= per later one), encoder, paths (relative to the jobs file); the batch's folders for
    --masks/--preview/--work-dir give each job its own path; a bad value stops the batch naming the line."""
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a.mp4 a.png edit at=0 at=2s first_frame=b.png crf=23 pix_fmt=yuv444p preview=p.png\n"
                    "c.mp4 c.png track\n")
    first, second = parse_jobs(jobs)
    assert first.first_frames == (tmp_path / "a.png", tmp_path / "b.png")
    shared = RunSettings(outputs=OutputOptions(masks=tmp_path / "m", work_dir=tmp_path / "w", preview=tmp_path / "v"))
    req = batch.job_request(first, shared)
    assert req.placement.at == ("0", "2s") and req.first_frames == first.first_frames
    assert (req.encoder.crf, req.encoder.pix_fmt, req.outputs.preview) == (23, "yuv444p", tmp_path / "p.png")
    assert req.outputs.masks == tmp_path / "m" / "a.genprop-edit.masks"
    assert req.outputs.work_dir == tmp_path / "w" / ".a.genprop-edit.mp4.genprop-work"
    assert batch.job_request(second, shared).outputs.preview == tmp_path / "v" / "c.genprop-track.preview.png"
    assert set(batch.job_keys()) >= {"seed", "steps", "guidance", "chunk", "overlap", "prompt", "composite", "preserve",
                                     "at", "start", "end", "splice", "masks", "preview", "work_dir", "crf", "preset",
                                     "pix_fmt", "first_frame"}  # fmt: skip
    jobs.write_text("a.mp4 a.png edit\nc.mp4 c.png edit chunk=33\n")
    with pytest.raises(JobsError, match="jobs.txt:2: --chunk must be one of"):
        batch.check_jobs(parse_jobs(jobs), RunSettings())
    jobs.write_text("a.mp4 a.png edit at=0 at=1\n")
    with pytest.raises(JobsError, match="one --first-frame per --at"):
        batch.check_jobs(parse_jobs(jobs), RunSettings())

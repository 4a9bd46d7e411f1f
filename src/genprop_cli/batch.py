"""Many clips through one loaded model, optionally split across processes and GPUs.

    from genprop_cli.api import GenProp, PropagationOptions
    from genprop_cli.batch import parse_jobs, run_batch
    from genprop_cli.config import RunSettings

    jobs = parse_jobs("jobs.txt")                 # a jobs file, a folder or a glob of videos
    model = GenProp.load("toy")                   # loaded once, used for every job
    summary = run_batch(model, jobs, RunSettings(options=PropagationOptions(steps=8)))
    summary.failed, summary.failures[0].error, summary.to_json()

Every job is a `RunRequest` built from the batch's shared `RunSettings` and its own KEY=VALUE options
(`job_request`): the same request a task command builds, so a jobs line can say anything a command line can.

A job that fails (unreadable video, bad first frame, output exists, out of memory, an internal error) is
recorded in the summary with its reason and the batch goes on; Ctrl-C still stops everything.

Sharding: job i belongs to rank i % world_size. `World.from_env()` reads RANK / WORLD_SIZE / LOCAL_RANK
as set by `accelerate launch` and `torchrun`; without a launcher it is rank 0 of 1. Each rank writes its
part of the summary; the last one to finish merges them (no barrier, so uneven shards never time out).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

from genprop_cli.config import FOLDER, RunRequest, RunSettings, Task, flag_of, flagged_fields
from genprop_cli.errors import GenPropError, InputError, OptionError, OutputError
from genprop_cli.fileio import write_text_atomic

if TYPE_CHECKING:
    from genprop_cli.api import GenProp, ProgressCallback, RenderResult

JOBS_FILE_SUFFIXES = (".txt", ".jobs", ".tsv")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SUMMARY_NAME = "genprop-batch.json"
_GLOB_CHARS = re.compile(r"[*?\[]")
_OUTPUT_STEM = re.compile(r"\.genprop-(?:" + "|".join(t.value for t in Task) + r")$")  # our own outputs
_OPTION_TOKEN = re.compile(r"^([a-z_]+)=(.*)$", re.DOTALL)


class JobsError(InputError):
    """The jobs list cannot be read: a bad line in a jobs file, an empty folder or glob, an unpaired video."""


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


EXTRA_FRAMES = "first_frame"  # KEY of the edited frames of a job's second and later `at`, in order


def job_keys() -> dict[str, Any]:
    """The KEY=VALUE options a jobs line may carry: every job-level field of `RunSettings`' groups (the task
    commands' flags of the same names), and `first_frame` (repeatable) for the images of later `at`s."""
    keys: dict[str, Any] = {}
    for group in RunSettings.groups().values():
        hints = get_type_hints(group)
        keys.update({f.name: hints[f.name] for f in flagged_fields(group) if flag_of(f).job_key})
    keys[EXTRA_FRAMES] = tuple[Path, ...]
    return keys


def _value_kind(kind: Any) -> tuple[Any, bool]:
    """(the type one VALUE parses to, whether the KEY may repeat) of a field's type hint."""
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) is tuple:
        return args[0], True
    if args and get_origin(kind) in (Union, UnionType):
        return args[0], False
    return kind, False


def parse_job_value(text: str, kind: Any, base: Path) -> object:
    """One VALUE as its field's type; paths are relative to the jobs file's folder."""
    if kind is bool:
        return _parse_bool(text)
    if kind is Path:
        return _relative_to(base, text)
    return kind(text)


@dataclass(frozen=True)
class Job:
    """One clip to propagate. `output` None: `<input>.genprop-<task>.<ext>` beside the input."""

    video: Path
    first_frame: Path
    task: Task
    output: Path | None = None
    values: tuple[tuple[str, object], ...] = ()  # its own options, e.g. (("seed", 3), ("at", ("0", "2s")))
    origin: str = ""  # where it was listed, e.g. "jobs.txt:4", for messages

    @property
    def first_frames(self) -> tuple[Path, ...]:
        """Its edited frames: FIRST_FRAME, then the `first_frame=` images of its later `at`s."""
        return (self.first_frame, *dict(self.values).get(EXTRA_FRAMES, ()))


# --- listing jobs ----------------------------------------------------------------------------------


def parse_jobs(
    spec: str | Path, *, task: Task | str | None = None, output_dir: Path | str | None = None
) -> list[Job]:
    """Jobs from a jobs file (.txt/.jobs/.tsv), a folder of videos, a single video or a glob of videos.

    Jobs file: one job a line, `VIDEO FIRST_FRAME TASK [OUTPUT] [KEY=VALUE ...]` (shell quoting for paths
    with spaces; `.tsv`: tab-separated, no quoting), `#` comments, blank lines ignored, relative paths
    relative to the file's folder, TASK `-` (or left out, with no OUTPUT) means `task`.
    Folder / glob / video: `NAME.<video>` pairs with `NAME.<task>.<image>` (one job per such frame, that
    task), else `NAME.edited.<image>` or `NAME.<image>` with `task`. Our own outputs (`*.genprop-<task>.*`)
    and hidden files are skipped. `output_dir`: where jobs without an explicit OUTPUT write.
    """
    default_task = Task(task) if task is not None else None
    out_dir = Path(output_dir) if output_dir is not None else None
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if _is_input_video(p))
        if not videos:
            raise JobsError(f"{path} holds no input videos ({', '.join(VIDEO_SUFFIXES)})")
        jobs = _pair_videos(videos, default_task)
    elif path.is_file() and path.suffix.lower() in JOBS_FILE_SUFFIXES:
        jobs = _read_jobs_file(path, default_task)
    elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        jobs = _pair_videos([path], default_task)
    elif path.exists():
        raise JobsError(
            f"{path} is not a jobs file ({', '.join(JOBS_FILE_SUFFIXES)}), a folder, a video or a glob of videos"
        )
    elif _GLOB_CHARS.search(str(spec)):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(str(spec)), recursive=True))
        videos = [p for p in matches if p.is_file() and _is_input_video(p)]
        if not videos:
            raise JobsError(f"no input videos match {spec}")
        jobs = _pair_videos(videos, default_task)
    else:
        raise JobsError(f"{spec} does not exist (expected a jobs file, a folder, a video or a glob of videos)")
    if not jobs:
        raise JobsError(f"{spec} lists no jobs")
    return [replace(job, output=resolve_output(job, out_dir)) for job in jobs]


def resolve_output(job: Job, output_dir: Path | None = None) -> Path:
    """The job's output: its own, else the default name in `output_dir`, else beside the input."""
    from genprop_cli.plan import default_output_path

    if job.output is not None:
        return job.output
    default = default_output_path(job.video, job.task)
    return output_dir / default.name if output_dir is not None else default


def _is_input_video(path: Path) -> bool:
    name = path.name
    return (
        path.suffix.lower() in VIDEO_SUFFIXES
        and not name.startswith(".")
        and not _OUTPUT_STEM.search(path.stem)
    )


def _read_jobs_file(path: Path, default_task: Task | None) -> list[Job]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobsError(f"cannot read jobs file {path}: {exc}") from None
    tab_separated = path.suffix.lower() == ".tsv"
    base = path.parent
    jobs: list[Job] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        origin = f"{path.name}:{number}"
        try:
            if tab_separated:
                stripped = line.strip()
                tokens = [] if not stripped or stripped.startswith("#") else [t.strip() for t in line.split("\t") if t.strip()]
            else:
                tokens = shlex.split(line, comments=True)
            if tokens:
                jobs.append(_job_from_tokens(tokens, base, default_task, origin))
        except ValueError as exc:  # shlex's "No closing quotation" and ours
            errors.append(f"{path}:{number}: {exc}")
    if errors:
        more = f" (and {len(errors) - 1} more bad line(s))" if len(errors) > 1 else ""
        raise JobsError(errors[0] + more)
    return jobs


def _job_from_tokens(tokens: list[str], base: Path, default_task: Task | None, origin: str) -> Job:
    positional, values = _split_tokens(tokens, base)
    if not 2 <= len(positional) <= 4:
        raise ValueError(f"expected VIDEO FIRST_FRAME TASK [OUTPUT] [KEY=VALUE ...], got {len(positional)} field(s)")
    video, frame = positional[0], positional[1]
    task_name = positional[2] if len(positional) > 2 else "-"
    if task_name == "-":
        if default_task is None:
            raise ValueError("no task on this line and no --task given")
        task = default_task
    else:
        try:
            task = Task(task_name.lower())
        except ValueError:
            raise ValueError(f"unknown task {task_name!r} (use {', '.join(t.value for t in Task)} or -)") from None
    output = _relative_to(base, positional[3]) if len(positional) > 3 else None
    return Job(
        video=_relative_to(base, video), first_frame=_relative_to(base, frame), task=task, output=output,
        values=tuple(values.items()), origin=origin,
    )  # fmt: skip


def _split_tokens(tokens: list[str], base: Path) -> tuple[list[str], dict[str, object]]:
    """A jobs line's positional fields, and its KEY=VALUE options parsed (repeatable keys as tuples)."""
    positional: list[str] = []
    values: dict[str, object] = {}
    known = job_keys()
    for token in tokens:
        match = _OPTION_TOKEN.match(token)
        if match and Path(token).suffix.lower() not in VIDEO_SUFFIXES:
            key, text = match.groups()
            if key not in known:
                raise ValueError(f"unknown job option {key!r} (known: {', '.join(known)})")
            kind, repeats = _value_kind(known[key])
            try:
                value = parse_job_value(text, kind, base)
            except ValueError:
                raise ValueError(f"{key}={text!r} is not a valid {key}") from None
            values[key] = (*values.get(key, ()), value) if repeats else value
        elif values:
            raise ValueError(f"{token!r} after a KEY=VALUE option; options come last")
        else:
            positional.append(token)
    return positional, values


def _relative_to(base: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else base / path


def _pair_videos(videos: Iterable[Path], default_task: Task | None) -> list[Job]:
    """The folder/glob convention: NAME.<task>.<image> (that task), else NAME.edited.<image> or NAME.<image>."""
    jobs: list[Job] = []
    unpaired: list[str] = []
    untasked: list[str] = []
    for video in videos:
        per_task = [(t, f) for t in Task if (f := _first_existing(video, t.value)) is not None]
        if per_task:
            jobs.extend(Job(video, frame, t, origin=video.name) for t, frame in per_task)
            continue
        frame = _first_existing(video, "edited") or _first_existing(video, None)
        if frame is None:
            unpaired.append(video.name)
        elif default_task is None:
            untasked.append(video.name)
        else:
            jobs.append(Job(video, frame, default_task, origin=video.name))
    if unpaired:
        raise JobsError(
            f"no edited first frame for {_some(unpaired)}: expected NAME.edited.png, NAME.png or NAME.<task>.png "
            f"({'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}) beside each video"
        )
    if untasked:
        raise JobsError(f"no task for {_some(untasked)}: pass --task or name the frame NAME.<task>.png")
    return jobs


def _first_existing(video: Path, tag: str | None) -> Path | None:
    stem = f"{video.stem}.{tag}" if tag else video.stem
    for suffix in (*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)):
        candidate = video.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _some(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# --- processes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """This process's place among the batch's processes (from the launcher's environment)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise OptionError(f"bad process rank {self.rank} of {self.world_size} (RANK / WORLD_SIZE)")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> World:
        """RANK / WORLD_SIZE / LOCAL_RANK as `accelerate launch` and `torchrun` set them; rank 0 of 1 without."""
        env = os.environ if environ is None else environ
        try:
            world_size = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise OptionError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    def shard(self, count: int) -> list[int]:
        """The indices of the jobs this process runs: i % world_size == rank."""
        return list(range(self.rank, count, self.world_size))

    def device(self, requested: str) -> str:
        """`auto`/`cuda` become this process's GPU (cuda:LOCAL_RANK) when there are several processes."""
        if self.world_size == 1 or requested not in ("auto", "cuda"):
            return requested
        import torch

        if not torch.cuda.is_available():
            return requested
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


def agree_batch_id(world: World) -> str:
    """An id every process of this launch shares (it names the summary parts), agreed at the start.

    Several processes: rank 0's random id, broadcast over a short-lived gloo group (the launcher's
    MASTER_ADDR/PORT); GENPROP_BATCH_ID, when set, is used instead.
    """
    explicit = os.environ.get("GENPROP_BATCH_ID")
    if explicit:
        return explicit
    batch_id = uuid.uuid4().hex[:12]
    if world.world_size == 1:
        return batch_id
    if not ("MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ):
        raise OptionError(
            "WORLD_SIZE > 1 without MASTER_ADDR/MASTER_PORT: start the batch with `accelerate launch` or "
            "`torchrun`, or set GENPROP_BATCH_ID to the same value in every process"
        )
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", rank=world.rank, world_size=world.world_size, timeout=timedelta(minutes=30))
    try:
        group = dist.new_group(backend="gloo") if not created else None
        box = [batch_id]
        dist.broadcast_object_list(box, src=0, group=group)
        return str(box[0])
    finally:
        if created:
            dist.destroy_process_group()


# --- running ---------------------------------------------------------------------------------------

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class JobResult:
    """What happened to one job; `error` is the one-line reason when it failed."""

    index: int  # position in the whole job list
    video: str
    first_frame: str
    task: str
    output: str
    status: str  # ok | failed | skipped
    error: str | None = None
    exit_code: int = 0  # the exit code `genprop <task>` would have given this job alone
    seconds: float = 0.0
    frames: int | None = None
    rank: int = 0
    origin: str = ""
    warnings: list[str] = field(default_factory=list)
    exception: BaseException | None = field(default=None, repr=False, compare=False)  # not serialised

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "exception"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        names = {f.name for f in fields(cls)} - {"exception"}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class BatchSummary:
    """All jobs' results (this process's, or every process's once merged), JSON-serialisable."""

    results: list[JobResult]
    jobs: int  # jobs in the whole batch (all processes)
    world_size: int = 1
    elapsed_s: float = 0.0
    variant: str | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> int:
        return self.count(OK)

    @property
    def failed(self) -> int:
        return self.count(FAILED)

    @property
    def skipped(self) -> int:
        return self.count(SKIPPED)

    @property
    def failures(self) -> list[JobResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def status(self) -> str:
        return FAILED if self.failed else OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "jobs": self.jobs, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
            "world_size": self.world_size, "elapsed_s": self.elapsed_s, "variant": self.variant,
            "results": [r.to_dict() for r in self.results],
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSummary:
        return cls(
            results=[JobResult.from_dict(r) for r in data["results"]], jobs=data["jobs"],
            world_size=data.get("world_size", 1), elapsed_s=data.get("elapsed_s", 0.0), variant=data.get("variant"),
        )  # fmt: skip

    @classmethod
    def merge(cls, parts: Sequence[BatchSummary]) -> BatchSummary:
        """One summary from every process's part, results in job order."""
        results = sorted((r for p in parts for r in p.results), key=lambda r: r.index)
        variants = [p.variant for p in parts if p.variant]
        return cls(
            results=results, jobs=max(p.jobs for p in parts), world_size=max(p.world_size for p in parts),
            elapsed_s=max(p.elapsed_s for p in parts), variant=variants[0] if variants else None,
        )  # fmt: skip


JobCallback = Callable[[JobResult], None]
StartCallback = Callable[[int, Job], None]


def run_batch(
    model: GenProp | None,
    jobs: Sequence[Job],
    settings: RunSettings = RunSettings(),
    *,
    output_dir: Path | str | None = None,
    skip_existing: bool = False,
    world: World | None = None,
    on_start: StartCallback | None = None,
    on_job: JobCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Runs this process's share of `jobs` (i % world_size == rank) with an already loaded `model`.

    `settings` apply to every job (its task and KEY=VALUE options change its own; `job_request`). Per-job
    exceptions are recorded, not raised; KeyboardInterrupt and SystemExit are. `model` may be None only
    when this process has no jobs. Two jobs writing the same output: the later one fails.
    """
    if settings.outputs.overwrite and skip_existing:
        raise OptionError("--overwrite and --skip-existing contradict each other")
    world = world or World()
    out_dir = Path(output_dir) if output_dir is not None else None
    started = time.perf_counter()
    outputs = [resolve_output(job, out_dir) for job in jobs]
    first_writer: dict[str, int] = {}
    for index, output in enumerate(outputs):
        first_writer.setdefault(os.path.abspath(output), index)
    results: list[JobResult] = []
    for index in world.shard(len(jobs)):
        if on_start is not None:
            on_start(index, jobs[index])
        clash = first_writer[os.path.abspath(outputs[index])]
        result = _run_one(model, jobs[index], outputs[index], settings, index=index, clash=clash if clash != index else None,
                          skip_existing=skip_existing, on_progress=on_progress, rank=world.rank)  # fmt: skip
        results.append(result)
        if on_job is not None:
            on_job(result)
    return BatchSummary(
        results=results, jobs=len(jobs), world_size=world.world_size,
        elapsed_s=round(time.perf_counter() - started, 3), variant=model.name if model is not None else None,
    )  # fmt: skip


def _run_one(
    model: GenProp | None,
    job: Job,
    output: Path,
    settings: RunSettings,
    *,
    index: int,
    clash: int | None,
    skip_existing: bool,
    on_progress: ProgressCallback | None,
    rank: int,
) -> JobResult:
    started = time.perf_counter()
    result = JobResult(
        index=index, video=str(job.video), first_frame=str(job.first_frame), task=job.task.value,
        output=str(output), status=OK, rank=rank, origin=job.origin,
    )  # fmt: skip
    try:
        if clash is not None:
            raise OutputError(f"output {output} is also job {clash + 1}'s output")
        if skip_existing and output.exists():
            result.status = SKIPPED
            return result
        if model is None:
            raise ValueError("run_batch needs a loaded model for this process's jobs")
        rendered = render_job(model, job_request(job, settings, output), on_progress=on_progress)
        result.frames, result.warnings = rendered.frames, list(rendered.warnings)
    except Exception as exc:  # noqa: BLE001 - one job's failure is recorded; KeyboardInterrupt is not an Exception
        result.status, result.exception = FAILED, exc
        if isinstance(exc, GenPropError):
            result.error, result.exit_code = str(exc), exc.exit_code
        else:
            result.error, result.exit_code = f"internal error: {type(exc).__name__}: {exc}", 1
        _release_accelerator_memory()
    finally:
        result.seconds = round(time.perf_counter() - started, 3)
        _release_host_memory()
    return result


def job_request(job: Job, settings: RunSettings, output: Path | None = None) -> RunRequest:
    """The run request of one job: the batch's settings changed by the job's task, output and KEY=VALUE
    options. A path option the batch command line gives for every job (--masks, --preview, --work-dir)
    names a folder that receives each job's under its default name; a jobs line's names the path itself."""
    from genprop_cli.plan import DEFAULT_PATHS

    output = output or resolve_output(job)
    values = {k: v for k, v in job.values if k != EXTRA_FRAMES}
    values.update(task=job.task, output=output)
    for f in flagged_fields(type(settings.outputs)):
        folder = getattr(settings.outputs, f.name)
        if flag_of(f).batch == FOLDER and f.name not in values and folder is not None:
            values[f.name] = Path(folder) / DEFAULT_PATHS[f.name](output).name
    return RunRequest.build(job.video, job.first_frames, settings, values)


def check_jobs(jobs: Sequence[Job], settings: RunSettings) -> None:
    """Builds every job's request before anything is loaded: a bad option on a jobs line stops the batch,
    naming the line."""
    for job in jobs:
        try:
            job_request(job, settings)
        except OptionError as exc:
            raise JobsError(f"{job.origin}: {exc}") from None


def render_job(model: GenProp, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RenderResult:
    """One job as `genprop <task>` would run it (track also writes its masks beside the output)."""
    from genprop_cli.render import render

    return render(model, request, on_progress=on_progress)


def _release_host_memory() -> None:
    """Between jobs, hand freed heap memory back to the system. Clips of many sizes leave glibc's heap
    fragmented: without this a 40-job soak grew about 100 MiB, with it about 25 (docs/performance.md)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _release_accelerator_memory() -> None:
    """After a failed job (out of memory, say), hand cached GPU memory back before the next one."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- summaries -------------------------------------------------------------------------------------


def default_summary_path(spec: str | Path, output_dir: Path | str | None = None) -> Path:
    """`--output-dir`/genprop-batch.json; else `<jobs>.genprop-batch.json` beside a jobs file, or
    genprop-batch.json in a folder of videos; else (a glob) in the current folder."""
    if output_dir is not None:
        return Path(output_dir) / SUMMARY_NAME
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        return path / SUMMARY_NAME
    if path.is_file() and path.suffix.lower() in JOBS_FILE_SUFFIXES:
        return path.with_name(f"{path.stem}.{SUMMARY_NAME}")
    return Path(SUMMARY_NAME)


def check_summary_path(path: Path) -> None:
    """Refuses a summary path that cannot be written, before any job runs."""
    if not Path(path).parent.is_dir():
        raise OutputError(f"summary folder {Path(path).parent} does not exist")
    if Path(path).is_dir():
        raise OutputError(f"summary {path} is a folder")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def collect_summary(part: BatchSummary, path: Path, *, batch_id: str, world: World) -> BatchSummary | None:
    """Writes this process's part; the process that finds every part present merges them into `path`.

    Returns the merged summary, or None while other processes are still running (or already merged).
    """
    path = Path(path)
    check_summary_path(path)
    if world.world_size == 1:
        write_json_atomic(path, part.to_dict())
        return part
    parts_dir = path.with_name(f".{path.name}.parts-{batch_id}")
    parts_dir.mkdir(exist_ok=True)
    write_json_atomic(parts_dir / f"rank-{world.rank:05d}.json", part.to_dict())
    try:
        parts = [
            BatchSummary.from_dict(json.loads((parts_dir / f"rank-{r:05d}.json").read_text(encoding="utf-8")))
            for r in range(world.world_size)
        ]
    except FileNotFoundError:
        return None
    merged = BatchSummary.merge(parts)
    write_json_atomic(path, merged.to_dict())
    shutil.rmtree(parts_dir, ignore_errors=True)
    return merged

"""`genprop eval`: runs GenProp and the classical baselines over an evaluation set and scores them.

An evaluation example is (source clip, edited first frame, ground-truth clip, ground-truth masks, task),
as the toy world writes them. Every method sees only the source clip and the edited first frame. Scores:

* all tasks: PSNR and SSIM against the ground truth, PSNR_m (PSNR against the source over the region the
  edit does not touch: how well the rest of the clip was kept);
* remove: removal residual of the object and of its shadow (0 = gone, 1 = still fully there);
* track: IoU and J&F of the output's marker-coloured pixels (and, for GenProp, of the MPD mask) against
  the ground-truth masks;
* optional, with a CLIP model: CLIP-T (frames vs the example's text) and CLIP-I (consecutive frames).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from genprop_cli.config import PropagationOptions, Task
from genprop_cli.errors import InputError, OutputError
from genprop_cli.evaluation import metrics
from genprop_cli.images import save_png_atomic
from genprop_cli.preview import preview_indices
from genprop_cli.toy import MARKER

REPORT_JSON, REPORT_MD, SHEETS = "report.json", "report.md", "sheets"


class EvalExample(Protocol):
    name: str
    task: Task
    source: np.ndarray  # (T, H, W, 3) uint8
    edited_first: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (T, H, W, 3) uint8, ground truth
    masks: np.ndarray  # (T, H, W) bool, where the edit changes the clip
    object_masks: np.ndarray | None  # remove: the object's pixels in the source
    shadow_masks: np.ndarray | None  # remove: its shadow's pixels in the source
    prompt: str  # a description of the ground truth, for CLIP-T


@dataclass
class MethodOutput:
    video: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray | None = None  # (T, H, W) bool, the method's own modification mask if it has one


def composite(video: np.ndarray, source: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) videos; `weight` (T, H, W) in [0, 1]: 1 takes the video's pixel, 0 the source's."""
    w = weight[..., None].astype(np.float32)
    return (w * video + (1 - w) * source + 0.5).clip(0, 255).astype(np.uint8)


# A method returns its output, or several named outputs of one run ({suffix: output}, e.g. with and
# without compositing), each scored as its own method "<name><suffix>".
Method = Callable[[EvalExample], "MethodOutput | dict[str, MethodOutput]"]


def genprop_method(
    model,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    preserve: bool | None = None,
    preserve_threshold: float | None = None,
) -> Method:
    """A loaded `GenProp` variant as an evaluation method; one generation scored twice: as generated,
    and "+composite" (pixels outside its MPD mask taken from the source, as `--composite` does).
    `preserve` samples as `--preserve` (True) or `--no-preserve` (False) do, `preserve_threshold` as
    `--preserve-threshold`; None: the variant's default."""
    from genprop_cli.api import Clip

    def run(example: EvalExample) -> dict[str, MethodOutput]:
        options = PropagationOptions(
            task=example.task, steps=steps, guidance=guidance, seed=seed, preserve=preserve,
            preserve_threshold=preserve_threshold,
        )  # fmt: skip
        clip = Clip.from_frames(example.source, example.edited_first, name=example.name)
        frames = list(model.propagate(clip, options))
        video = np.stack([f.rgb for f in frames])
        soft = np.stack([f.mask for f in frames]).astype(np.float32) / 255.0
        masks = soft >= 0.5
        composited = composite(video, example.source, soft)
        return {"": MethodOutput(video, masks), "+composite": MethodOutput(composited, masks)}

    return run


def baseline_method(name: str) -> Method:
    from genprop_cli.evaluation.baselines import BASELINES

    baseline = BASELINES[name]
    return lambda example: MethodOutput(baseline(example.source, example.edited_first))


def applies(method: str, task: Task) -> bool:
    """Mask-then-inpaint is a removal method; everything else runs on every task."""
    return method != "mask_then_inpaint" or task is Task.REMOVE


@dataclass
class Row:
    example: str
    task: str
    method: str
    seconds: float
    scores: dict[str, float] = field(default_factory=dict)


def score(example: EvalExample, output: MethodOutput, clip_scorer=None) -> dict[str, float]:
    """The metrics that apply to this example's task."""
    video = output.video
    scores = {
        "psnr": metrics.psnr(video, example.target),
        "ssim": metrics.ssim(video, example.target),
        "psnr_m": metrics.psnr_m(video, example.source, example.masks),
    }
    if example.task is Task.REMOVE and example.object_masks is not None:
        residual = metrics.removal_residual(
            video, example.source, example.target, example.object_masks, example.shadow_masks
        )
        scores["residual_object"] = residual["object_mean"]
        scores["residual_shadow"] = residual["shadow_mean"]
    if example.task is Task.TRACK:
        marked = metrics.masks_from_marker(video, MARKER)
        scores |= {f"marker_{k}": v for k, v in metrics.jaccard_and_f(marked, example.masks).items()}
        scores["marker_iou"] = metrics.iou(marked, example.masks)
        if output.masks is not None:
            scores |= {f"mpd_{k}": v for k, v in metrics.jaccard_and_f(output.masks, example.masks).items()}
    if clip_scorer is not None:
        scores["clip_t"] = clip_scorer.clip_t(video, example.prompt)
        scores["clip_i"] = clip_scorer.clip_i(video)
    return scores


@dataclass
class EvalReport:
    rows: list[Row]
    methods: list[str]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Mean of every score by task, then method (nan and inf-free means; inf PSNR counts as 100 dB)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for task in sorted({r.task for r in self.rows}):
            for method in self.methods:
                rows = [r for r in self.rows if r.task == task and r.method == method]
                if not rows:
                    continue
                keys = sorted({k for r in rows for k in r.scores})
                out.setdefault(task, {})[method] = {
                    k: _mean([r.scores.get(k, math.nan) for r in rows], cap=100.0 if k.startswith("psnr") else None)
                    for k in keys
                }
                out[task][method]["seconds"] = _mean([r.seconds for r in rows])
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"methods": self.methods, "notes": self.notes, "summary": self.summary(), "rows": [asdict(r) for r in self.rows]},
            indent=2,
            default=_json_number,
        )

    def to_markdown(self) -> str:
        """One table per task: methods as rows, mean scores as columns."""
        lines = []
        for task, by_method in self.summary().items():
            keys = sorted({k for scores in by_method.values() for k in scores if k != "seconds"}) + ["seconds"]
            lines += [f"### {task}", "", "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            for method, scores in by_method.items():
                lines.append(f"| {method} | " + " | ".join(_fmt(scores.get(k, math.nan)) for k in keys) + " |")
            lines.append("")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _mean(values: Sequence[float], cap: float | None = None) -> float:
    """Mean ignoring nan; with `cap`, values above it (an identical frame's infinite PSNR) count as `cap`."""
    finite = [min(v, cap) if cap is not None else v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _json_number(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def contact_sheet(example: EvalExample, outputs: dict[str, MethodOutput], path: Path, rows: int = 3) -> None:
    """Sampled frames as rows; columns: source | edited first frame | each method | ground truth | mask."""
    gap = 3
    picked = preview_indices(len(example.source), rows)
    lines = []
    for t in picked:
        tiles = [example.source[t], example.edited_first, *(o.video[t] for o in outputs.values()), example.target[t]]
        tiles.append(np.repeat((example.masks[t] * 255).astype(np.uint8)[..., None], 3, axis=-1))
        spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
        lines.append(np.concatenate([p for tile in tiles for p in (tile, spacer)][:-1], axis=1))
    spacer = np.full((gap, lines[0].shape[1], 3), 255, np.uint8)
    save_png_atomic(path, np.concatenate([p for line in lines for p in (line, spacer)][:-1], axis=0))


def evaluate(
    examples: Sequence[EvalExample],
    methods: dict[str, Method],
    *,
    clip_scorer=None,
    sheets: Path | None = None,
    on_example: Callable[[int, int, str], None] | None = None,
) -> EvalReport:
    """Runs every method on every example it applies to and scores the outputs."""
    rows: list[Row] = []
    names: list[str] = []
    for i, example in enumerate(examples):
        if on_example is not None:
            on_example(i + 1, len(examples), example.name)
        outputs: dict[str, MethodOutput] = {}
        for name, method in methods.items():
            if not applies(name, example.task):
                continue
            started = time.perf_counter()
            result = method(example)
            seconds = time.perf_counter() - started
            for suffix, output in (result if isinstance(result, dict) else {"": result}).items():
                outputs[name + suffix] = output
                names += [name + suffix] if name + suffix not in names else []
                scores = score(example, output, clip_scorer)
                rows.append(Row(example.name, example.task.value, name + suffix, seconds, scores))
        if sheets is not None:
            contact_sheet(example, outputs, sheets / f"{example.name}.png")
    notes = [] if clip_scorer is not None else ["CLIP-T/CLIP-I not computed: no --clip-model given"]
    return EvalReport(rows, names, notes)


# --- the `genprop eval` job ----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRequest:
    """What `genprop eval` was asked to do."""

    eval_set: Path
    output: Path
    model: str | None = None
    adapters: dict[str, str] = field(default_factory=dict)  # label -> adapter file, on the variant's backbone
    variant_adapter: bool = True
    baselines: bool = True
    clip_model: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    limit: int | None = None
    tasks: tuple[Task, ...] = tuple(Task)
    device: str = "auto"
    overwrite: bool = False
    preserve: bool = False  # also score each GenProp run sampled the other way ("<name>+preserve"/"+no-preserve")


def load_examples(request: EvalRequest) -> list[EvalExample]:
    """The requested tasks' examples, at most `limit` of each, in the set's order."""
    from genprop_cli.toy import read_eval_set

    if not (Path(request.eval_set) / "index.json").is_file():
        raise InputError(f"{request.eval_set} is not an evaluation set (no index.json)")
    chosen, counts = [], dict.fromkeys(request.tasks, 0)
    for example in read_eval_set(Path(request.eval_set)):
        if example.task in counts and (request.limit is None or counts[example.task] < request.limit):
            counts[example.task] += 1
            chosen.append(example)
    if not chosen:
        raise InputError(f"{request.eval_set} has no examples of the requested task(s)")
    return chosen


def build_methods(request: EvalRequest) -> dict[str, Method]:
    """GenProp with the variant's adapter and each extra adapter, then the baselines."""
    from genprop_cli.api import GenProp
    from genprop_cli.evaluation.baselines import BASELINES

    methods: dict[str, Method] = {}
    runs = ({"genprop": None} if request.variant_adapter else {}) | {
        f"genprop[{label}]": path for label, path in request.adapters.items()
    }
    for name, adapter in runs.items():
        model = GenProp.load(request.model, adapter=adapter, device=request.device)
        methods[name] = genprop_method(model, steps=request.steps, guidance=request.guidance, seed=request.seed)
        if request.preserve:  # also the sampling the variant does not do by default
            other = not model.variant.spec.defaults.preserve
            methods[f"{name}+{'preserve' if other else 'no-preserve'}"] = genprop_method(
                model, steps=request.steps, guidance=request.guidance, seed=request.seed, preserve=other
            )
    if request.baselines:
        methods |= {name: baseline_method(name) for name in BASELINES}
    if not methods:
        raise InputError("nothing to evaluate: --no-variant-adapter, no --adapter and --no-baselines")
    return methods


def run_eval(request: EvalRequest, *, on_example: Callable[[int, int, str], None] | None = None) -> EvalReport:
    """Runs the request and writes report.json, report.md and one contact sheet per example.

    Everything goes to a temporary folder beside OUTPUT that is renamed into place when complete.
    """
    from genprop_cli.fileio import atomic_folder

    output = Path(request.output)
    if output.exists() and not request.overwrite:
        raise OutputError(f"{output} exists (use --overwrite to replace it)")
    examples = load_examples(request)
    methods = build_methods(request)
    clip_scorer = None
    if request.clip_model is not None:
        from genprop_cli.evaluation.clip_score import ClipScorer

        clip_scorer = ClipScorer.from_pretrained(request.clip_model)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(output) as staging:
        (staging / SHEETS).mkdir()
        report = evaluate(examples, methods, clip_scorer=clip_scorer, sheets=staging / SHEETS, on_example=on_example)
        report.notes.append(f"{len(examples)} examples from {request.eval_set}; seed {request.seed}")
        (staging / REPORT_JSON).write_text(report.to_json())
        (staging / REPORT_MD).write_text(report.to_markdown())
    return report

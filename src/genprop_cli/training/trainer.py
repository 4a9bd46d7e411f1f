"""`genprop train`: trains the SCE, MPD and task embedding on a frozen backbone with synthetic pairs.

Hugging Face Accelerate runs it on one CPU, one GPU or many GPUs and machines (`accelerate launch -m
genprop_cli train ...`) with DDP. Only the adapter's parameters train: the backbone has no gradients and no
optimizer state. DeepSpeed, FSDP and Megatron-LM are refused (`check_data_parallel`): a whole adapter
replica fits each GPU, and the EMA and the export need its weights unsharded. The variant's backbone family
gives the sampler and the objective (`families.get_family`); a family registered without one is refused.

Every step's data and noise are drawn from generators seeded by (seed, step, micro-batch, process), so a
run resumed from a checkpoint (model, optimizer, LR scheduler, EMA and step, saved with Accelerate)
continues exactly as an uninterrupted run would. A compact checkpoint (`compact_checkpoint`: the weights and
the EMA in fp16, no optimizer moments; a quarter of the size) is small enough to commit, so a long run can span
machines that keep no files; a run resumed from one starts AdamW afresh and is close to, not equal to, the
uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from genprop_cli.config import field_default, reject_unknown, require_at_least_one
from genprop_cli.errors import GenPropError, OptionError
from genprop_cli.fileio import partial_path, replace_folder
from genprop_cli.hardware import check_bf16_runs_natively
from genprop_cli.training.augment import AugmentConfig, PairSampler
from genprop_cli.training.data import ClipSpec, open_dataset, sample_clip
from genprop_cli.training.ema import EMA, check_decay
from genprop_cli.training.losses import LossWeights
from genprop_cli.training.objective import NoiseSchedule, objective_for

NESTED_OPTIONS: dict[str, type] = {"loss": LossWeights, "augment": AugmentConfig, "noise": NoiseSchedule}  # tables

CHECKPOINTS = "checkpoints"
ADAPTER_PREFIX = "adapter."  # the trainable part of the GenProp denoiser's state dict
ADAPTER_FILE = "adapter.safetensors"
SUMMARY_FILE = "summary.json"
COMPACT_WEIGHTS = "adapter.safetensors"  # a compact checkpoint's trained weights, an fp16 adapter file
COMPACT_EMA = "ema.safetensors"  # ... and its EMA weights, another one (usable as --adapter as it is)
SCHEDULER_FILE = "scheduler.bin"  # Accelerate's name for the LR scheduler's state


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML config file as a dict, or OptionError naming it."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OptionError(f"cannot read config {path}: {exc}") from None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved next to its checkpoints and checked on resume."""

    data: str
    output: str
    format: str = "davis"
    model: str | None = None  # variant whose backbone is trained against (weights.toml)
    init_adapter: str | None = None  # start from these adapter weights instead of zero-initialised ones
    # the SCE also reads the first frame's change (`AdapterConfig.first_frame_change`); added to an
    # `init_adapter` without it as a no-op that then trains
    first_frame_change: bool = False
    sce_blocks: int | None = None  # None: every encoder block of the backbone
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    # Clip length and size; None: the variant's (native frames or default chunk; its pixel budget at 16:9).
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    max_stride: int = 2
    min_crop: float = 0.6
    mixed_precision: str = "no"  # no | fp16 | bf16 (GPU)
    gradient_checkpointing: bool = False
    ema_decay: float | None = None  # e.g. 0.999; the exported adapter then holds the EMA weights
    save_every: int = 500
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (0: all)
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    noise: NoiseSchedule = field(default_factory=NoiseSchedule)

    def __post_init__(self) -> None:
        if self.format not in ("davis", "ytvis"):
            raise OptionError(f"--format must be davis or ytvis, got {self.format!r}")
        counts = ("steps", "batch_size", "grad_accum", "frames", "width", "height", "save_every", "log_every")
        require_at_least_one(self, counts)
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise OptionError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.device not in ("auto", "cpu"):
            raise OptionError(f"training --device must be auto or cpu (GPUs are chosen by accelerate), got {self.device!r}")
        check_decay(self.ema_decay)

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> TrainConfig:
        """A config file (same keys as the fields; [loss], [augment], [noise] tables) plus CLI overrides."""
        raw = read_toml(path)
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        reject_unknown(cls, raw, "training option")
        try:
            values = {
                k: (NESTED_OPTIONS[k](**v) if k in NESTED_OPTIONS and isinstance(v, dict) else v) for k, v in raw.items()
            }
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise OptionError(f"bad training option: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume_key(self) -> dict[str, Any]:
        """The options that must match for a checkpoint to be resumed (not `steps`, logging or saving)."""
        skip = {"steps", "save_every", "keep_checkpoints", "log_every", "output"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}


@dataclass(frozen=True)
class StepLog:
    step: int
    steps: int
    terms: dict[str, float]
    lr: float
    steps_per_s: float


class PairStream:
    """Deterministic synthetic pairs: the pairs of (step, micro-batch, process) depend only on those and the seed."""

    def __init__(self, config: TrainConfig) -> None:
        # Videos shorter than a clip are left out (and reported) when the dataset is indexed.
        self.dataset = open_dataset(Path(config.data), config.format, min_frames=config.frames)
        if len(self.dataset) == 0:
            raise GenPropError(f"no usable sequence in {config.data}")
        self.spec = ClipSpec(
            frames=config.frames, size=(config.width, config.height), max_stride=config.max_stride, min_crop=config.min_crop
        )
        self.sampler = PairSampler(config.augment)
        self.seed = config.seed
        self.failed_draws = 0

    def pairs(self, step: int, micro: int, process: int, count: int) -> list:
        rng = np.random.default_rng([self.seed, step, micro, process])
        out = []
        for _ in range(100 * count):
            if len(out) == count:
                return out
            clip = sample_clip(self.dataset.load(int(rng.integers(len(self.dataset)))), self.spec, rng)
            donor = sample_clip(self.dataset.load(int(rng.integers(len(self.dataset)))), self.spec, rng)
            if clip is None or donor is None:
                self.failed_draws += 1
                continue
            out.append(self.sampler(clip, donor, rng))
        raise GenPropError(f"could not draw usable training clips from {self.dataset.__class__.__name__}")


SHARDING_ENGINES = {"DEEPSPEED": "DeepSpeed", "FSDP": "FSDP", "MEGATRON_LM": "Megatron-LM"}


def launched_engine(environ: Mapping[str, str]) -> str:
    """The sharding engine `accelerate launch` was configured with (its ACCELERATE_USE_* variables), or "NO"."""
    for kind in SHARDING_ENGINES:
        if environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true":
            return kind
    return "NO"


def check_data_parallel(distributed_type: str) -> None:
    """Refuses an Accelerate distributed type that shards the model (DeepSpeed, FSDP, Megatron-LM).

    Only the adapter trains (0.71 B and 1.56 B parameters for svd-xt and wan-ti2v-5b), so a whole replica per
    process fits a large GPU and DDP is enough; and the EMA (kept on the parameters as they were before
    `prepare`) and the export (the unwrapped model's state) need every adapter weight whole on each
    process, as DDP keeps them. The engines' own gradient accumulation and checkpoints are untested here.
    """
    kind = str(getattr(distributed_type, "value", distributed_type))
    if kind in SHARDING_ENGINES:
        raise OptionError(
            f"genprop train runs on DDP, not {SHARDING_ENGINES[kind]}: only the adapter trains, a whole replica "
            "fits each GPU, and its EMA and export need unsharded weights; choose multi-GPU (DDP) in "
            "`accelerate config`"
        )


def check_trainable(model: str | None) -> None:
    """Refuses, before any data is read, a variant whose backbone family has no training objective here."""
    from genprop_cli.families import family_names, get_family
    from genprop_cli.weights import load_registry

    spec = load_registry().get(model)
    if not get_family(spec.family).trainable:
        trainable = [name for name in family_names() if get_family(name).trainable]
        raise OptionError(
            f"variant {spec.name!r} is a {spec.family!r} backbone; training is implemented for {', '.join(trainable)}"
        )


def check_can_train(config: TrainConfig) -> None:
    """The refusals that need neither data nor a model: a backbone family with no objective, a sharding
    engine, bf16 on a CPU that only emulates it. Run before Accelerate sets up, which would import that
    engine and fix the process's precision."""
    check_trainable(config.model)
    check_data_parallel(launched_engine(os.environ))
    if config.mixed_precision == "bf16":
        on_gpu = config.device != "cpu" and torch.cuda.is_available()
        check_bf16_runs_natively(torch.device("cuda" if on_gpu else "cpu"), "--mixed-precision no")


def with_variant_defaults(config: TrainConfig) -> TrainConfig:
    """Fills the clip length and size the config leaves open from the variant in weights.toml."""
    if None not in (config.frames, config.width, config.height):
        return config
    from genprop_cli.weights import load_registry

    spec = load_registry().get(config.model)
    step = spec.limits.multiple_of
    width = int(math.sqrt(spec.limits.max_pixels * 16 / 9)) // step * step
    height = max(step, spec.limits.max_pixels // width // step * step)
    return replace(
        config,
        frames=config.frames or spec.limits.native_frames or spec.defaults.chunk,
        width=config.width or width,
        height=config.height or height,
    )


def latest_checkpoint(output: Path) -> Path | None:
    folders = sorted((output / CHECKPOINTS).glob("step-*"))
    return folders[-1] if folders else None


def is_compact(checkpoint: Path) -> bool:
    """Whether `checkpoint` is a compact one (`compact_checkpoint`) rather than Accelerate's full state."""
    return (Path(checkpoint) / COMPACT_WEIGHTS).is_file()


def _load_pipeline(config: TrainConfig, device: torch.device, adapter_file: Path | None = None):
    """The frozen backbone of the variant with a fresh (zero-initialised) adapter, or `adapter_file` (a compact
    checkpoint's weights) or else `init_adapter`; reading the first frame's change if the config asks, and
    recording the L_MPD inside weight it trains with."""
    from genprop_cli.families import sampler_class
    from genprop_cli.pipelines import quiet_libraries
    from genprop_cli.weights import resolve_variant

    source = str(adapter_file) if adapter_file is not None else config.init_adapter
    resolved = resolve_variant(config.model, adapter=source, require_adapter=False)
    quiet_libraries()
    # Adapter weights train in float32; mixed precision is Accelerate's autocast.
    pipe = sampler_class(resolved.spec.family).from_pretrained(
        resolved.backbone_dir,
        resolved.adapter_file if source else None,
        device=device,
        dtype=torch.float32,
        file_variant=resolved.spec.backbone_file_variant,
        sce_blocks=config.sce_blocks,
    )
    if config.first_frame_change:
        pipe.adapter.add_first_frame_change(pipe.backbone)
    # mpd_balanced reweights each batch by its own areas, which no single offset undoes: left uncalibrated.
    pipe.adapter.set_mask_inside_weight(config.loss.mpd_inside_weight)
    return pipe


_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _store_frozen_in(pipe, mixed_precision: str) -> None:
    """Under mixed precision, keeps the frozen backbone and encoders in that precision, as diffusers'
    ControlNet scripts do: half their memory (10 GB of Wan 2.2 TI2V-5B's transformer, 11 GB of its
    UMT5-XXL). The adapter, its optimizer state and the VAE that encodes the targets stay in float32, and
    the modules a model keeps in float32 (`_keep_in_fp32_modules`, e.g. Wan's norms and RoPE) stay so."""
    dtype = _HALF.get(mixed_precision)
    if dtype is None:
        return
    frozen = [pipe.backbone.denoiser, getattr(pipe, "image_encoder", None), getattr(pipe, "text_encoder", None)]
    for module in frozen:
        if module is not None:
            _cast_keeping_fp32_modules(module, dtype)


def _cast_keeping_fp32_modules(module: torch.nn.Module, dtype: torch.dtype) -> None:
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not keep.intersection(name.split(".")):
            tensor.data = tensor.data.to(dtype)


def _enable_checkpointing(module: torch.nn.Module) -> None:
    """Recompute activations in the backward pass for every diffusers block (backbone and adapter copies)."""
    import functools

    from torch.utils.checkpoint import checkpoint

    for m in module.modules():
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing = True
            m._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)


def _lr_lambda(warmup: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


@dataclass
class TrainResult:
    output: str
    adapter: str
    steps: int
    resumed_from: int
    processes: int
    final_terms: dict[str, float]
    mean_terms_last_10: dict[str, float]
    steps_per_s: float
    peak_rss_mib: float
    peak_cuda_mib: float | None
    dataset: dict[str, Any]
    failed_draws: int
    fresh_optimizer: bool = False  # resumed from a compact checkpoint: AdamW's moments started from zero

    def to_json(self) -> str:
        return json.dumps({"status": "ok", **asdict(self)}, indent=2)

    def skipped_note(self) -> str | None:
        """One line on how many dataset items were left out (each one's file and reason is in the summary)."""
        count = len(self.dataset.get("skipped", []))
        if count == 0:
            return None
        return f"skipped {count} unusable dataset item{'s' * (count != 1)} (see {Path(self.output) / SUMMARY_FILE})"


@dataclass
class _Session:
    """What one training run holds while it steps: the prepared model and optimizer, the data and the EMA."""

    accelerator: Any
    config: TrainConfig
    output: Path
    stream: PairStream
    pipe: Any
    model: Any
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    ema: EMA | None
    objective: Any
    fresh_optimizer: bool = False


def _start(config: TrainConfig) -> tuple[_Session, int]:
    """Sets up Accelerate, the data, the frozen backbone with its adapter and the optimizer; resumes from the
    latest checkpoint. Returns the session and the step to continue from."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_can_train(config)
    config = with_variant_defaults(config)
    output = Path(config.output)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=config.mixed_precision,
        cpu=config.device == "cpu",
        # Stepped by hand once per optimizer step: Accelerate would step it once per process, so that
        # warmup_steps would end num_processes times too early.
        step_scheduler_with_optimizer=False,
    )
    check_data_parallel(accelerator.distributed_type)
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    stream = PairStream(config)
    checkpoint = latest_checkpoint(output)
    compact = checkpoint is not None and is_compact(checkpoint)
    pipe = _load_pipeline(config, accelerator.device, checkpoint / COMPACT_WEIGHTS if compact else None)
    _store_frozen_in(pipe, config.mixed_precision)
    denoiser = pipe.denoiser
    denoiser.adapter.train()
    if config.gradient_checkpointing:
        _enable_checkpointing(denoiser)
    params = [p for p in denoiser.adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.warmup_steps))
    model, optimizer, scheduler = accelerator.prepare(denoiser, optimizer, scheduler)
    _checkpoint_adapter_only(accelerator)
    ema = EMA(params, config.ema_decay) if config.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    trained = [name for name, p in denoiser.adapter.named_parameters() if p.requires_grad]
    start = _resume(accelerator, config, checkpoint, scheduler, ema, trained)
    session = _Session(accelerator, config, output, stream, pipe, model, optimizer, scheduler, params, ema,
                       objective_for(pipe, config.noise), fresh_optimizer=compact)  # fmt: skip
    return session, start


def _step(s: _Session, step: int) -> dict[str, float]:
    """One optimizer step (its micro-batches accumulated); returns its loss terms, averaged for the log."""
    accelerator, config = s.accelerator, s.config
    micro_terms, names = [], []
    for micro in range(config.grad_accum):
        with accelerator.accumulate(s.model):
            generator = torch.Generator(device=accelerator.device)
            generator.manual_seed(_seed_of(config.seed, step, micro, accelerator.process_index))
            pairs = s.stream.pairs(step, micro, accelerator.process_index, config.batch_size)
            batch = s.objective.encode(pairs, generator)
            with accelerator.autocast():
                terms = s.objective.loss(s.model, batch, config.loss, generator)
            accelerator.backward(terms.total)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(s.params, config.max_grad_norm)
            s.optimizer.step()  # Accelerate skips it until the last micro-batch of the step
            if accelerator.sync_gradients and not s.optimizer.step_was_skipped:
                s.scheduler.step()  # once per optimizer step, however many processes
            s.optimizer.zero_grad(set_to_none=True)
        names = list(vars(terms))
        micro_terms.append(torch.stack([v.detach().float() for v in vars(terms).values()]))
    if s.ema is not None:
        s.ema.update()
    return _gathered_terms(accelerator, names, micro_terms)


def train(config: TrainConfig, *, on_log: Callable[[StepLog], None] | None = None) -> TrainResult:
    """Runs (or resumes) a training run; returns its summary (also written to <output>/summary.json)."""
    s, start = _start(config)
    config, accelerator, output = s.config, s.accelerator, s.output
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in range(start, config.steps):
        history.append(_step(s, step))
        done = step + 1
        rate = (done - start) / max(time.perf_counter() - started, 1e-9)
        if accelerator.is_main_process:
            _append_log(output, {"step": done, **history[-1], "lr": s.scheduler.get_last_lr()[0]})
            if on_log is not None and (done % config.log_every == 0 or done == config.steps):
                on_log(StepLog(done, config.steps, history[-1], s.scheduler.get_last_lr()[0], rate))
        if done % config.save_every == 0 or done == config.steps:
            _save_checkpoint(accelerator, config, output, done)
            if accelerator.is_main_process:
                _drop_old_checkpoints(output, config.keep_checkpoints)

    accelerator.wait_for_everyone()
    adapter_path = output / ADAPTER_FILE
    if accelerator.is_main_process:
        _export(accelerator.unwrap_model(s.model).adapter, s.ema, s.params, adapter_path)
    result = _summary(s, history, start, started, adapter_path)
    if accelerator.is_main_process:
        (output / SUMMARY_FILE).write_text(result.to_json())
    accelerator.end_training()
    return result


def _summary(s: _Session, history: list[dict[str, float]], start: int, started: float, adapter_path: Path) -> TrainResult:
    config = s.config
    last = history[-1] if history else {}
    return TrainResult(
        output=str(s.output), adapter=str(adapter_path), steps=config.steps, resumed_from=start,
        processes=s.accelerator.num_processes, final_terms=last,
        mean_terms_last_10=_mean_terms(history[-10:]),
        steps_per_s=(config.steps - start) / max(time.perf_counter() - started, 1e-9),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        dataset=s.stream.dataset.report.to_dict(), failed_draws=s.stream.failed_draws,
        fresh_optimizer=s.fresh_optimizer,
    )  # fmt: skip


def _mean_terms(history: list[dict[str, float]]) -> dict[str, float]:
    """Each term's mean over the logged steps that measured it."""
    names = dict.fromkeys(k for h in history for k in h)
    return {k: float(np.mean([h[k] for h in history if k in h])) for k in names}


def _seed_of(seed: int, step: int, micro: int, process: int) -> int:
    return int(np.random.SeedSequence([seed, step, micro, process, 1]).generate_state(1)[0])


def _gathered_terms(accelerator, names: list[str], micro_terms: list[torch.Tensor]) -> dict[str, float]:
    """A step's loss terms (one stacked tensor per micro-batch), averaged over its micro-batches and over
    processes (for logging only). A term is averaged over the micro-batches that measured it (not NaN), and
    left out when none did (a source-noised step's denoising terms)."""
    values = torch.nanmean(accelerator.gather(torch.stack(micro_terms)), dim=0)
    return {k: float(v) for k, v in zip(names, values) if not torch.isnan(v)}


def _append_log(output: Path, record: dict[str, float]) -> None:
    with open(output / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _resume(accelerator, config: TrainConfig, checkpoint: Path | None, scheduler, ema: EMA | None,
            trained: list[str]) -> int:  # fmt: skip
    """Loads `checkpoint` (the run's latest) if there is one; returns the step to continue from. A compact
    checkpoint's weights were loaded with the pipeline; here its EMA and LR schedule follow."""
    if checkpoint is None:
        return 0
    output = checkpoint.parent.parent
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    current = json.loads(json.dumps(config.resume_key()))
    if with_added_options(saved["config"], current, TrainConfig) != current:
        raise OptionError(
            f"{output} holds a checkpoint of a run with other options; use another --output or the same options"
        )
    if is_compact(checkpoint):
        _load_compact_state(checkpoint, saved, scheduler, ema, trained)
    else:
        accelerator.load_state(str(checkpoint))
    _truncate_log(output, saved["step"])
    return int(saved["step"])


def _load_compact_state(checkpoint: Path, saved: dict[str, Any], scheduler, ema: EMA | None,
                        trained: list[str]) -> None:  # fmt: skip
    """The LR schedule and the EMA of a compact checkpoint (`trained`: the names of the adapter's trained
    parameters, in the optimizer's order)."""
    scheduler.load_state_dict(torch.load(checkpoint / SCHEDULER_FILE, map_location="cpu", weights_only=True))
    if ema is None:
        return
    ema_file = checkpoint / COMPACT_EMA
    if not ema_file.is_file():
        raise GenPropError(f"{checkpoint} is a compact checkpoint without the EMA ({COMPACT_EMA}) this run keeps")
    ema.load_state_dict({"decay": ema.decay, "updates": saved.get("ema_updates", 10**9),
                         "shadow": _trained_tensors(ema_file, trained)})  # fmt: skip


def _option_defaults(cls: type) -> dict[str, Any]:
    """The default of each field of the options dataclass `cls`, as JSON would hold it."""
    return json.loads(json.dumps({f.name: field_default(f) for f in fields(cls)}, default=asdict))


def with_added_options(saved: dict[str, Any], current: dict[str, Any], cls: type) -> dict[str, Any]:
    """A checkpoint's saved options completed with the options added since it was written, where the current
    run leaves them at their defaults: a run started before an option existed resumes under its default."""
    defaults = _option_defaults(cls)
    completed = dict(saved)
    for name, value in current.items():
        if name not in completed and name in defaults and defaults[name] == value:
            completed[name] = value
        elif name in NESTED_OPTIONS and isinstance(completed.get(name), dict) and isinstance(value, dict):
            completed[name] = with_added_options(completed[name], value, NESTED_OPTIONS[name])
    return completed


def _truncate_log(output: Path, step: int) -> None:
    """Drops log lines written after the checkpoint (a crashed run may have logged further)."""
    log = output / "log.jsonl"
    if log.exists():
        kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        log.write_text("".join(line + "\n" for line in kept))


def _checkpoint_adapter_only(accelerator) -> None:
    """Checkpoints hold the adapter's weights, not the frozen backbone's (several GB for svd-xt), which every run
    loads from its variant anyway; resuming loads them back into the adapter, strictly."""
    from accelerate.utils import SAFE_MODEL_NAME
    from safetensors.torch import load_file

    def keep_adapter(models, weights, output_dir) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}

    def load_adapter(models, input_dir) -> None:
        for i, model in enumerate(models):
            name = f"{SAFE_MODEL_NAME}.safetensors" if i == 0 else f"{SAFE_MODEL_NAME}_{i}.safetensors"
            state = load_file(Path(input_dir) / name)
            adapter_state = {k.removeprefix(ADAPTER_PREFIX): v for k, v in state.items()}
            accelerator.unwrap_model(model).adapter.load_state_dict(adapter_state, strict=True)
        models.clear()  # loaded here: Accelerate must not load them again (it would want the backbone too)

    accelerator.register_save_state_pre_hook(keep_adapter)
    accelerator.register_load_state_pre_hook(load_adapter)


def _drop_old_checkpoints(output: Path, keep: int) -> None:
    """Removes all but the newest `keep` complete checkpoints (0: keeps all)."""
    if keep <= 0:
        return
    for old in sorted((output / CHECKPOINTS).glob("step-*[0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _save_checkpoint(accelerator, config: TrainConfig, output: Path, step: int) -> None:
    folder = output / CHECKPOINTS / f"step-{step:08d}"
    tmp = partial_path(folder, unique=False)  # every process saves its part into the same folder
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "config": config.resume_key()}))
        replace_folder(tmp, folder)  # a checkpoint folder exists only once complete
    accelerator.wait_for_everyone()


def _export(adapter, ema: EMA | None, params: list[torch.nn.Parameter], path: Path) -> None:
    """Writes the adapter file the propagation commands load with --adapter (EMA weights if enabled)."""
    if ema is None:
        adapter.save(path)
        return
    backup = [p.detach().clone() for p in params]
    ema.copy_to(params)
    adapter.save(path)
    with torch.no_grad():
        for p, b in zip(params, backup):
            p.copy_(b)


def export_checkpoint(checkpoint: Path, destination: Path, *, use_ema: bool = True, half: bool = False) -> Path:
    """Writes the adapter file of a run's checkpoint, full or compact (its EMA weights when the run keeps an EMA
    and `use_ema`), so a run can be evaluated while it trains, or from the checkpoint a session committed; `half`
    stores it in fp16 (half the size, for committing; loading casts it back to the backbone's dtype)."""
    adapter, shadow, _ = _checkpoint_adapter(Path(checkpoint))
    if use_ema and shadow is not None:
        _copy_into_trained(adapter, shadow)
    if half:
        adapter.to(torch.float16)
    adapter.save(Path(destination))
    return Path(destination)


def compact_checkpoint(checkpoint: Path, destination: Path) -> Path:
    """Writes a compact copy of a checkpoint at `destination` (a step-N folder of a run's checkpoints): the
    adapter's weights and its EMA as fp16 adapter files, the LR schedule and the step, without the optimizer's
    moments. A run resumed from it starts AdamW afresh."""
    checkpoint, destination = Path(checkpoint), Path(destination)
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    adapter, shadow, updates = _checkpoint_adapter(checkpoint)
    temp = partial_path(destination)
    temp.mkdir(parents=True)
    try:
        adapter.to(torch.float16).save(temp / COMPACT_WEIGHTS)
        if shadow is not None:
            _copy_into_trained(adapter, shadow)
            adapter.save(temp / COMPACT_EMA)
        shutil.copyfile(checkpoint / SCHEDULER_FILE, temp / SCHEDULER_FILE)
        state = {**saved, "compact": True, **({"ema_updates": updates} if shadow is not None else {})}
        (temp / "trainer_state.json").write_text(json.dumps(state))
        replace_folder(temp, destination)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return destination


def _checkpoint_adapter(checkpoint: Path) -> tuple[Any, list[torch.Tensor] | None, int | None]:
    """The adapter of a checkpoint (full or compact) with its trained weights, its EMA's weights (None when the
    run keeps none) and the EMA's update count, on the CPU."""
    from safetensors.torch import load_file

    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    config = TrainConfig.from_dict({**saved["config"], "output": str(checkpoint.parent.parent), "device": "cpu"})
    compact = is_compact(checkpoint)
    adapter = _load_pipeline(config, torch.device("cpu"), checkpoint / COMPACT_WEIGHTS if compact else None)
    adapter = adapter.denoiser.adapter
    trained = [name for name, p in adapter.named_parameters() if p.requires_grad]
    count = len(trained)
    if compact:
        ema_file = checkpoint / COMPACT_EMA
        if not (config.ema_decay and ema_file.is_file()):
            return adapter, None, None
        return adapter, _trained_tensors(ema_file, trained), saved.get("ema_updates")
    state = load_file(checkpoint / "model.safetensors")
    adapter.load_state_dict({k.removeprefix(ADAPTER_PREFIX): v for k, v in state.items()}, strict=True)
    ema_file = checkpoint / "custom_checkpoint_0.pkl"  # Accelerate's name for the first registered object
    if not (config.ema_decay and ema_file.is_file()):
        return adapter, None, None
    ema_state = torch.load(ema_file, map_location="cpu", weights_only=True)
    if len(ema_state["shadow"]) != count:
        raise GenPropError(f"{ema_file} holds {len(ema_state['shadow'])} EMA tensors for {count} adapter parameters")
    return adapter, ema_state["shadow"], ema_state.get("updates")


def _trained_tensors(adapter_file: Path, trained: list[str]) -> list[torch.Tensor]:
    """The tensors of an adapter file named `trained`, in that order, as float32."""
    from safetensors.torch import load_file

    state = load_file(str(adapter_file))
    missing = [name for name in trained if name not in state]
    if missing:
        raise GenPropError(f"{adapter_file} lacks {len(missing)} of the adapter's trained tensors ({missing[0]}, ...)")
    return [state[name].float() for name in trained]


def _copy_into_trained(adapter, tensors: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, t in zip((p for p in adapter.parameters() if p.requires_grad), tensors, strict=True):
            p.copy_(t)


def compact_resume_note(config: TrainConfig) -> str | None:
    """One line when the run will resume from a compact checkpoint (whose optimizer starts afresh)."""
    checkpoint = latest_checkpoint(Path(config.output))
    if checkpoint is None or not is_compact(checkpoint):
        return None
    return f"resuming from the compact checkpoint {checkpoint} (no optimizer state: AdamW starts afresh)"


def describe(config: TrainConfig) -> str:
    """One line for the log: what is being trained, with which data mix."""
    mix = config.augment
    return (
        f"training {config.model or 'default variant'} adapter on {config.data} ({config.format}), "
        f"{config.steps} steps, batch {config.batch_size}x{config.grad_accum}, {config.frames} frames "
        f"{config.width}x{config.height}, mix copy-paste/mask-fill/color-fill/unchanged/reshape "
        f"{mix.copy_paste}/{mix.mask_fill}/{mix.color_fill}/{mix.unchanged}/{mix.reshape}"
        + (", SCE and MPD reading the first frame's change" if config.first_frame_change else "")
    )


"""Training a small SVD-architecture backbone from scratch: the first stage (VAE), then the I2V denoiser.

GenProp trains an adapter on a FROZEN image-to-video model. On a CPU no public one fits, so the toy
variant's backbone is trained here, on toy clips, as an ordinary first-frame-conditioned video generator
(no edits, no GenProp): stage 1 fits `AutoencoderKLTemporalDecoder` (L1 + MSE + a small KL term);
stage 2 fits `UNetSpatioTemporalConditionModel` with SVD's own EDM v-prediction objective
(`families/svd/objective.py`), conditioned on the first frame's noise-augmented latent and CLIP embedding, with
both dropped together 10% of the time so that classifier-free guidance works. The image encoder stays a
frozen random tiny CLIP: it is part of the architecture the pipeline drives, and the concatenated
first-frame latent carries the appearance. The result is a diffusers folder that `GenPropSVDPipeline`
loads like any SVD checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genprop_cli.config import reject_unknown, require_at_least_one
from genprop_cli.errors import OptionError
from genprop_cli.fileio import atomic_folder
from genprop_cli.hardware import check_bf16_runs_natively
from genprop_cli.families.svd.objective import edm_denoised, edm_noisy_input, sample_sigma
from genprop_cli.families.svd.sampler import decode_vae
from genprop_cli.training.data import ClipSpec, open_dataset, sample_clip
from genprop_cli.training.ema import EMA, check_decay
from genprop_cli.training.objective import NoiseSchedule, to_model_frames

LogFn = Callable[[dict[str, Any]], None]
VAE_DECODERS = ("temporal", "2d")


@dataclass(frozen=True)
class BackboneArchitecture:
    """Sizes of the toy SVD-architecture components (every structural feature of SVD is kept)."""

    unet_channels: tuple[int, ...] = (32, 64)
    latent_channels: int = 8
    vae_channels: tuple[int, ...] = (32, 32, 32)  # 3 levels: 4x spatial downsampling
    vae_layers_per_block: int = 1
    # "temporal": SVD's AutoencoderKLTemporalDecoder. "2d": the per-frame AutoencoderKL, which SVD pipelines
    # also drive (diffusers passes num_frames only to decoders that take it) and whose GroupNorm group count
    # is configurable: the temporal decoder's fixed 32 groups make every norm a per-channel instance norm at
    # 32 channels, which erases each frame's mean colour and stalls training (docs/results.md, issue 12).
    vae_decoder: str = "temporal"
    vae_norm_groups: int = 32
    vae_mid_attention: bool = True  # "2d" only: without it the VAE trains faster here and as well (issue 12)
    attention_heads: tuple[int, ...] = (2, 4)
    unet_layers_per_block: int = 1
    clip_dim: int = 32

    def unet_config(self, frames: int) -> dict[str, Any]:
        levels = len(self.unet_channels)
        return dict(
            block_out_channels=self.unet_channels,
            layers_per_block=self.unet_layers_per_block,
            sample_size=16,
            in_channels=2 * self.latent_channels,
            out_channels=self.latent_channels,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1),
            cross_attention_dim=self.clip_dim,
            num_attention_heads=self.attention_heads,
            projection_class_embeddings_input_dim=3 * 16,
            addition_time_embed_dim=16,
            num_frames=frames,
        )

    def __post_init__(self) -> None:
        if self.vae_decoder not in VAE_DECODERS:
            raise OptionError(f"vae_decoder must be one of {', '.join(VAE_DECODERS)}, got {self.vae_decoder!r}")
        if self.vae_decoder == "temporal" and self.vae_norm_groups != 32:
            raise OptionError("vae_norm_groups applies to vae_decoder = \"2d\" (the temporal decoder fixes 32 groups)")
        if self.vae_decoder == "temporal" and not self.vae_mid_attention:
            raise OptionError("vae_mid_attention = false applies to vae_decoder = \"2d\" only")
        if any(c % self.vae_norm_groups for c in self.vae_channels):
            raise OptionError(f"vae_norm_groups ({self.vae_norm_groups}) must divide every vae_channels entry "
                              f"{list(self.vae_channels)}")

    def vae_config(self) -> dict[str, Any]:
        """Keyword arguments of the VAE class `vae_decoder` names."""
        levels = len(self.vae_channels)
        config = dict(
            block_out_channels=list(self.vae_channels),
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * levels,
            latent_channels=self.latent_channels,
            layers_per_block=self.vae_layers_per_block,
        )
        if self.vae_decoder == "2d":
            config |= dict(up_block_types=["UpDecoderBlock2D"] * levels, norm_num_groups=self.vae_norm_groups,
                           mid_block_add_attention=self.vae_mid_attention)
        return config

    def build_vae(self) -> torch.nn.Module:
        from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

        cls = AutoencoderKLTemporalDecoder if self.vae_decoder == "temporal" else AutoencoderKL
        return cls(**self.vae_config())

    def clip_config(self) -> dict[str, Any]:
        return dict(hidden_size=self.clip_dim, projection_dim=self.clip_dim, num_hidden_layers=2,
                    num_attention_heads=2, image_size=32, intermediate_size=37, patch_size=8)


@dataclass
class BackboneTrainConfig:
    """Everything a backbone training run depends on; written next to its outputs."""

    data: str
    output: str
    format: str = "davis"
    frames: int = 16
    size: int = 64  # square clips, size x size
    max_stride: int = 2
    min_crop: float = 0.8
    vae_steps: int = 1500
    vae_batch_clips: int = 4
    vae_frames: int = 4  # the temporal decoder sees this many consecutive frames
    vae_crop: int = 32  # the VAE is convolutional: crops give 4x the samples per second of whole frames
    vae_lr: float = 1e-3
    vae_warmup_steps: int = 0
    kl_weight: float = 1e-6
    unet_steps: int = 3000
    batch_size: int = 2
    lr: float = 4e-4
    warmup_steps: int = 100
    condition_dropout: float = 0.1
    noise_aug_strength: float = 0.02
    log_every: int = 50
    seed: int = 0
    device: str = "cpu"
    # "bf16": autocast matmuls and convolutions to bfloat16 (float32 master weights, optimizer and loss);
    # on a CPU with AMX-BF16 that is several times faster (benchmarks/bench_train.py).
    mixed_precision: str = "no"
    # e.g. 0.999: the saved U-Net holds its EMA weights (the VAE's cosine decay to a tenth of the rate
    # already leaves polished weights; an average would only lag behind them).
    ema_decay: float | None = None
    save_every: int = 500  # steps between resumable checkpoints of the stage in progress
    architecture: BackboneArchitecture = field(default_factory=BackboneArchitecture)

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("no", "bf16"):
            raise OptionError(f"mixed_precision must be no or bf16, got {self.mixed_precision!r}")
        check_decay(self.ema_decay)
        counts = ("frames", "size", "vae_steps", "unet_steps", "batch_size", "vae_batch_clips", "vae_frames")
        require_at_least_one(self, counts)
        if self.vae_crop % 8 or self.vae_crop < 8:
            raise OptionError(f"vae_crop must be a multiple of 8, got {self.vae_crop}")
        if self.size % 16:
            raise OptionError(f"size must be a multiple of 16 (VAE and U-Net downsampling), got {self.size}")
        if not 0 <= self.condition_dropout < 1:
            raise OptionError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BackboneTrainConfig:
        reject_unknown(cls, raw, "backbone training option")
        raw = dict(raw)
        if isinstance(raw.get("architecture"), dict):
            arch = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["architecture"].items()}
            raw["architecture"] = BackboneArchitecture(**arch)
        return cls(**raw)


@dataclass
class BackboneResult:
    output: str
    vae_final_l1: float
    unet_final_loss: float
    scaling_factor: float
    vae_seconds: float
    unet_seconds: float

    def to_json(self) -> str:
        return json.dumps({"status": "ok", **asdict(self)}, indent=2)


# --- data ----------------------------------------------------------------------------------------


def _clip_stream(config: BackboneTrainConfig, frames: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless random clips (frames, size, size, 3) uint8 drawn from the dataset."""
    dataset = open_dataset(Path(config.data), config.format, min_frames=frames)  # InputError if none is long enough
    spec = ClipSpec(frames=frames, size=(config.size, config.size), max_stride=config.max_stride,
                    min_crop=config.min_crop)
    cache: dict[int, Any] = {}  # toy datasets fit in memory; JPEG decoding would dominate a step
    while True:
        index = int(rng.integers(len(dataset)))
        if index not in cache:
            cache[index] = dataset.load(index)
        sample = sample_clip(cache[index], spec, rng)
        if sample is not None:
            yield sample.frames


def _batch(stream: Iterator[np.ndarray], clips: int, device: torch.device) -> torch.Tensor:
    """(clips, frames, 3, H, W) in [-1, 1]."""
    return torch.stack([to_model_frames(next(stream)) for _ in range(clips)]).to(device)


def _random_crops(clips: torch.Tensor, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """One random crop x crop window per clip (B, F, 3, H, W), the same in all its frames."""
    height, width = clips.shape[-2:]
    if crop >= min(height, width):
        return clips
    windows = []
    for clip in clips:
        top, left = (int(rng.integers(0, n - crop + 1)) for n in (height, width))
        windows.append(clip[..., top : top + crop, left : left + crop])
    return torch.stack(windows)


# --- components ----------------------------------------------------------------------------------


def build_components(arch: BackboneArchitecture, frames: int, seed: int):
    """Fresh VAE, U-Net, frozen random CLIP image encoder, its processor and SVD's scheduler."""
    from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from genprop_cli.families.svd.tiny import SCHEDULER_CONFIG

    torch.manual_seed(seed)
    vae = arch.build_vae()
    unet = UNetSpatioTemporalConditionModel(**arch.unet_config(frames))
    clip_config = arch.clip_config()
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_config)).eval()
    size = clip_config["image_size"]
    processor = CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})
    return vae, unet, image_encoder, processor, EulerDiscreteScheduler(**SCHEDULER_CONFIG)


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _cosine_to_tenth(step: int, total: int) -> float:
    """Learning-rate factor from 1 down to 0.1 over the run: the last steps polish details."""
    return 0.55 + 0.45 * math.cos(math.pi * step / total)


def _optimizer_step(optimizer: torch.optim.Optimizer, module: torch.nn.Module, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()


def autocast(config: BackboneTrainConfig, device: torch.device):
    """The forward passes' precision: bf16 autocast under mixed_precision = "bf16", else plain float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16")


# --- resumable stages ----------------------------------------------------------------------------

CHECKPOINTS = "checkpoints"


@dataclass
class Stage:
    """One stage's trainable state: what a checkpoint saves and a resumed run loads back."""

    name: str  # "vae" | "unet"
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    generator: torch.Generator | None = None
    ema: EMA | None = None


def save_stage(output: Path, stage: Stage, step: int, config: BackboneTrainConfig, keep: int = 2) -> Path:
    """Writes `output/checkpoints/<stage>-<step>` (safetensors + JSON, no pickle) atomically; keeps the newest `keep`."""
    from safetensors.torch import save_file

    folder = output / CHECKPOINTS / f"{stage.name}-{step:08d}"
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in stage.module.state_dict().items()}
    optim = stage.optimizer.state_dict()
    for index, values in optim["state"].items():
        tensors |= {f"optim.{index}.{k}": v.contiguous() for k, v in values.items()}
    if stage.ema is not None:
        tensors |= {f"ema.{i}": t.contiguous() for i, t in enumerate(stage.ema.shadow)}
        tensors["ema_updates"] = torch.tensor(stage.ema.updates, dtype=torch.int64)
    if stage.generator is not None:
        tensors["torch_generator"] = stage.generator.get_state()
    meta = {"stage": stage.name, "step": step, "rng": stage.rng.bit_generator.state,
            "param_groups": optim["param_groups"], "config": resume_key(config)}  # fmt: skip
    with atomic_folder(folder) as temp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(temp / "state.safetensors"))
        (temp / "state.json").write_text(json.dumps(meta))
    for old in sorted((output / CHECKPOINTS).glob(f"{stage.name}-*[0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_stage_checkpoint(output: Path, name: str) -> Path | None:
    folders = sorted((Path(output) / CHECKPOINTS).glob(f"{name}-*[0-9]"))
    return folders[-1] if folders else None


def load_stage(folder: Path, stage: Stage, config: BackboneTrainConfig) -> int:
    """Restores a stage from `folder` (weights, optimizer moments, EMA, RNG states); returns its step."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "state.json").read_text())
    if meta["config"] != json.loads(json.dumps(resume_key(config))):
        raise OptionError(f"{folder} is a checkpoint of a run with other options; use another --output or the same options")
    tensors = load_file(str(folder / "state.safetensors"))
    stage.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    stage.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if stage.ema is not None:
        for i, shadow in enumerate(stage.ema.shadow):
            shadow.copy_(tensors[f"ema.{i}"])
        stage.ema.updates = int(tensors["ema_updates"])
    if stage.generator is not None:
        stage.generator.set_state(tensors["torch_generator"])
    stage.rng.bit_generator.state = meta["rng"]
    return int(meta["step"])


def resume_key(config: BackboneTrainConfig) -> dict[str, Any]:
    """Options a checkpoint must share with the run resuming it (not step counts, logging or saving)."""
    skip = {"output", "vae_steps", "unet_steps", "log_every", "save_every", "device"}
    return {k: v for k, v in asdict(config).items() if k not in skip}


def _resume_or_start(output: Path, stage: Stage, config: BackboneTrainConfig) -> int:
    checkpoint = latest_stage_checkpoint(output, stage.name)
    return load_stage(checkpoint, stage, config) if checkpoint is not None else 0


def _finish(stage: Stage) -> None:
    """The stage's module takes its EMA weights (when kept) and is frozen."""
    if stage.ema is not None:
        stage.ema.copy_to(list(stage.module.parameters()))
    stage.module.eval().requires_grad_(False)


def train_vae(vae, config: BackboneTrainConfig, device: torch.device, log: LogFn, output: Path | None = None) -> float:
    """Stage 1: reconstruction of short clips (temporal or per-frame decoder); returns the last L1.

    With `output`, checkpoints go to output/checkpoints every `save_every` steps and a run resumes from the
    newest one exactly (same data, crops and updates as an uninterrupted run)."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    vae.train().requires_grad_(True)
    stage = Stage("vae", vae, optimizer, np.random.default_rng([config.seed, 1]))
    start = _resume_or_start(output, stage, config) if output is not None else 0
    stream = _clip_stream(config, config.vae_frames, stage.rng)
    l1 = math.nan
    for step in range(start, config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * _warmup(step, config.vae_warmup_steps) * _cosine_to_tenth(step, config.vae_steps)
        clips = _random_crops(_batch(stream, config.vae_batch_clips, device), config.vae_crop, stage.rng).flatten(0, 1)
        with autocast(config, device):
            posterior = vae.encode(clips).latent_dist
            # The posterior mean, as inference uses it (`latent_dist.mode()`): sampling would spend the short
            # CPU budget on learning to shrink the posterior variance. The KL term keeps the means bounded.
            recon = decode_vae(vae, posterior.mode(), config.vae_frames).float()
            kl = posterior.kl().float().mean()
        l1_t = (recon - clips).abs().mean()
        loss = l1_t + (recon - clips).square().mean() + config.kl_weight * kl
        _optimizer_step(optimizer, vae, loss)
        l1 = float(l1_t.detach())
        done = step + 1
        if step % config.log_every == 0 or done == config.vae_steps:
            log({"stage": "vae", "step": done, "l1": round(l1, 5), "loss": round(float(loss.detach()), 5)})
        if output is not None and (done % config.save_every == 0 or done == config.vae_steps):
            save_stage(output, stage, done, config)
    _finish(stage)
    return l1


@torch.no_grad()
def latent_scaling_factor(vae, config: BackboneTrainConfig, device: torch.device, clips: int = 32) -> float:
    """1 / std of the latents (the diffusers convention: scaled latents have unit variance)."""
    stream = _clip_stream(config, config.vae_frames, np.random.default_rng([config.seed, 2]))
    latents = torch.cat([vae.encode(_batch(stream, 1, device)[0]).latent_dist.mode() for _ in range(clips)])
    return float(1.0 / latents.std())


def _time_ids(config: BackboneTrainConfig, batch: int, device: torch.device) -> torch.Tensor:
    from genprop_cli.families.svd.sampler import SVDConditioning

    c = SVDConditioning(noise_aug_strength=config.noise_aug_strength)
    return torch.tensor([[c.fps - 1, c.motion_bucket_id, c.noise_aug_strength]], device=device).repeat(batch, 1)


@dataclass
class LatentBank:
    """Every dataset video encoded once by the trained (now frozen) VAE: stage 2 never runs the VAE."""

    latents: list[torch.Tensor]  # per video (T, C, h, w), scaled
    embeds: list[torch.Tensor]  # per video (T, 1, D): CLIP embedding of each frame

    def sample(self, frames: int, max_stride: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random clip of `frames` latents (random video, stride, start) and its first frame's embedding."""
        video = int(rng.integers(len(self.latents)))
        length = self.latents[video].shape[0]
        stride = int(rng.integers(1, max(1, min(max_stride, (length - 1) // max(frames - 1, 1))) + 1))
        start = int(rng.integers(0, length - (frames - 1) * stride))
        index = torch.arange(start, start + frames * stride, stride)
        return self.latents[video][index], self.embeds[video][start]


@torch.no_grad()
def encode_dataset(pipeline, config: BackboneTrainConfig) -> LatentBank:
    dataset = open_dataset(Path(config.data), config.format, min_frames=config.frames)
    latents, embeds = [], []
    for i in range(len(dataset)):
        frames = to_model_frames(_resized(dataset.load(i).frames, config.size))
        latents.append(pipeline.encode_frames(frames))
        embeds.append(torch.stack([pipeline.embed_image(f)[0] for f in frames]))
    return LatentBank(latents, embeds)


def _resized(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1:3] == (size, size):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])


def train_unet(pipeline, config: BackboneTrainConfig, device: torch.device, log: LogFn, output: Path | None = None) -> float:
    """Stage 2: first-frame-conditioned video generation with the EDM objective; returns the last loss.
    Checkpoints and resumes like `train_vae` when given `output`."""
    unet = pipeline.unet
    bank = encode_dataset(pipeline, config)
    scale = pipeline.vae.config.scaling_factor
    schedule = NoiseSchedule()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    unet.train().requires_grad_(True)
    ema = EMA(list(unet.parameters()), config.ema_decay) if config.ema_decay else None
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    stage = Stage("unet", unet, optimizer, np.random.default_rng([config.seed, 3]), generator, ema)
    start = _resume_or_start(output, stage, config) if output is not None else 0
    rng = stage.rng
    time_ids = _time_ids(config, config.batch_size, device)
    loss_value = math.nan
    for step in range(start, config.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _warmup(step, config.warmup_steps) * _cosine_to_tenth(step, config.unet_steps)
        drawn = [bank.sample(config.frames, config.max_stride, rng) for _ in range(config.batch_size)]
        x0 = torch.stack([d[0] for d in drawn]).to(device)
        embeds = torch.stack([d[1] for d in drawn]).to(device)
        condition = x0[:, 0] / scale  # the conditioning latent is unscaled, as in encode_condition
        keep = torch.rand(config.batch_size, generator=generator, device=device) >= config.condition_dropout
        condition = condition * keep.view(-1, 1, 1, 1)
        embeds = embeds * keep.view(-1, 1, 1)
        b, f = x0.shape[:2]
        sigma = sample_sigma(schedule, b, generator, device)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        s, noisy, scaled = edm_noisy_input(x0, sigma, noise)
        model_in = torch.cat([scaled, condition[:, None].expand(-1, f, -1, -1, -1)], dim=2)
        with autocast(config, device):
            out = unet(model_in, 0.25 * sigma.log(), embeds, time_ids).sample
        per_pixel = (s**2 + 1) / s**2 * (edm_denoised(noisy, s, out.float()) - x0).square()
        loss = per_pixel.mean()
        _optimizer_step(optimizer, unet, loss)
        if ema is not None:
            ema.update()
        loss_value = float(loss.detach())
        done = step + 1
        if step % config.log_every == 0 or done == config.unet_steps:
            log({"stage": "unet", "step": done, "loss": round(loss_value, 5)})
        if output is not None and (done % config.save_every == 0 or done == config.unet_steps):
            save_stage(output, stage, done, config)
    _finish(stage)
    return loss_value


def train_backbone(config: BackboneTrainConfig, *, log: LogFn | None = None) -> BackboneResult:
    """Both stages; writes `OUTPUT/backbone` (diffusers SVD layout, fp16 safetensors) and a log."""
    from diffusers import StableVideoDiffusionPipeline

    from genprop_cli.families.svd.sampler import GenPropSVDPipeline, SVDConditioning

    if config.mixed_precision == "bf16":
        check_bf16_runs_natively(torch.device(config.device), "--mixed-precision no")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "backbone-config.json").write_text(json.dumps(asdict(config), indent=2))
    log_file = (output / "backbone-log.jsonl").open("a")  # a resumed run appends

    def emit(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if log is not None:
            log(record)

    device = torch.device(config.device)
    vae, unet, image_encoder, processor, scheduler = build_components(config.architecture, config.frames, config.seed)
    vae.to(device)
    started = time.perf_counter()
    vae_l1 = train_vae(vae, config, device, emit, output)
    vae_seconds = time.perf_counter() - started
    scale = latent_scaling_factor(vae, config, device)
    vae.register_to_config(scaling_factor=scale)
    svd = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                       feature_extractor=processor).to(device)
    # The GenProp pipeline's encoders are the exact ones inference uses; its adapter is unused here.
    pipeline = GenPropSVDPipeline(svd, conditioning=SVDConditioning(noise_aug_strength=config.noise_aug_strength))
    started = time.perf_counter()
    unet_loss = train_unet(pipeline, config, device, emit, output)
    unet_seconds = time.perf_counter() - started
    log_file.close()
    svd.to(dtype=torch.float16).save_pretrained(output / "backbone", safe_serialization=True)
    result = BackboneResult(str(output / "backbone"), vae_l1, unet_loss, scale, round(vae_seconds, 1),
                            round(unet_seconds, 1))
    (output / "backbone-summary.json").write_text(result.to_json())
    return result

"""GenProp sampling on a Stable Video Diffusion backbone, one chunk at a time.

It follows the conditioning of diffusers' `StableVideoDiffusionPipeline` (CLIP image embedding as the
cross-attention context, the conditioning frame's VAE latent concatenated on channels to every frame,
`added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]`, Euler with v-prediction) and adds what
GenProp needs: the original video's latents go to the SCE, the task selects the task embedding, and the
MPD's mask comes out with the frames. Chunks after the first are conditioned on a latent the previous
chunk generated, taken directly (no VAE decode/encode round trip at chunk boundaries, a known source of
colour drift in chained windows); the CLIP embedding of the user's edited frame anchors every chunk.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from genprop_cli.config import RuntimeOptions, Task
from genprop_cli.errors import OptionError
from genprop_cli.families import Capabilities, backbone_for
from genprop_cli.families.base import ChunkResult, StepCallback
from genprop_cli.models.genprop import GenPropAdapter
from genprop_cli.pipelines.assembly import attach_adapter, load_sampler


@dataclass(frozen=True)
class SVDConditioning:
    """SVD micro-conditioning; defaults are the stock pipeline's."""

    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02


def keep_unmodified(
    latents: torch.Tensor,
    source_latents: torch.Tensor,
    modified: torch.Tensor,
    sigma: torch.Tensor | float,
    noise: torch.Tensor,
    *,
    threshold: float = 0.5,
    grow: int = 1,
) -> torch.Tensor:
    """RePaint-style anchoring for one chunk: outside the MPD's modified region (`modified`, the probability
    of a change, > `threshold`, grown by `grow` latent pixels so that its edge is generated too), the latents
    become the source's noised to `sigma` (EDM: x = x0 + sigma * noise), so the model generates only the region
    it changes, with the rest of the clip exact around it. Shapes: latents/source/noise (F, C, h, w),
    modified (F, 1, h, w)."""
    region = (modified.float() > threshold).float()
    if grow > 0:
        region = F.max_pool2d(region, 2 * grow + 1, stride=1, padding=grow)
    known = source_latents.float() + float(sigma) * noise.float()
    return (region * latents.float() + (1 - region) * known).to(latents.dtype)


def decode_vae(vae: torch.nn.Module, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Unscaled latents (F, C, h, w) -> frames (F, 3, H, W): SVD's temporal decoder takes `num_frames`, a
    per-frame AutoencoderKL does not (diffusers' own SVD pipeline makes the same distinction)."""
    if "num_frames" in inspect.signature(vae.decode).parameters:
        return vae.decode(latents, num_frames=num_frames).sample
    return vae.decode(latents).sample


class GenPropSVDPipeline:
    """Frozen SVD components + a GenProp adapter; methods are the steps of propagating one chunk (a
    `ChunkSampler`)."""

    family = "svd"
    # preserve: `sample_chunk(preserve=True)` anchors the latents outside the MPD's region to the source's
    capabilities = Capabilities(preserve=True)

    def __init__(
        self,
        svd_pipeline,
        adapter: GenPropAdapter | None = None,
        *,
        sce_blocks: int | None = None,
        conditioning: SVDConditioning = SVDConditioning(),
        device: torch.device | None = None,
        runtime: RuntimeOptions = RuntimeOptions(),
    ) -> None:
        self.conditioning = conditioning
        self.vae = svd_pipeline.vae
        self.image_encoder = svd_pipeline.image_encoder
        self.feature_extractor = svd_pipeline.feature_extractor
        self.scheduler = svd_pipeline.scheduler
        self.unet = svd_pipeline.unet
        self._device = torch.device(device) if device is not None else self.unet.device
        self.backbone = backbone_for(self.family, self.unet)
        self.adapter, self.denoiser, self.offload = attach_adapter(
            self.backbone, adapter, sce_blocks=sce_blocks, device=self._device, dtype=self.unet.dtype, runtime=runtime,
            frozen=(self.vae, self.image_encoder, self.unet),
        )  # fmt: skip

    @classmethod
    def from_pretrained(
        cls,
        backbone_dir: Path,
        adapter_file: Path | None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        file_variant: str | None = None,
        sce_blocks: int | None = None,
        runtime: RuntimeOptions = RuntimeOptions(),
    ) -> GenPropSVDPipeline:
        """Loads the backbone folder (diffusers layout, safetensors only) and the adapter file; without
        one, a zero-initialised adapter copying `sce_blocks` blocks (default: all encoder blocks)."""
        from diffusers import StableVideoDiffusionPipeline

        return load_sampler(
            cls, StableVideoDiffusionPipeline, backbone_dir, adapter_file, device=device, dtype=dtype,
            file_variant=file_variant, sce_blocks=sce_blocks, runtime=runtime, encoders=("image_encoder",),
        )  # fmt: skip

    @property
    def device(self) -> torch.device:
        """Where the computation runs (weights may live in CPU memory with offloading)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Working width and height must be multiples of this (VAE factor x U-Net downsampling)."""
        return self.spatial_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    # --- conditioning ------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP image embedding of one frame (3, H, W) in [-1, 1] -> (1, 1, D)."""
        size = self.image_encoder.config.image_size
        pixels = F.interpolate(image[None].float(), size=(size, size), mode="bicubic", antialias=True)
        pixels = ((pixels.clamp(-1, 1) + 1) / 2).to(self.device)
        mean = torch.tensor(self.feature_extractor.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std, device=self.device).view(1, 3, 1, 1)
        pixels = ((pixels - mean) / std).to(self.image_encoder.dtype)
        with self.offload.use(self.image_encoder):
            return self.image_encoder(pixels).image_embeds[:, None].to(self.dtype)

    @torch.no_grad()
    def encode_condition(
        self, image: torch.Tensor, generator: torch.Generator | None, noise_aug: float | None = None
    ) -> torch.Tensor:
        """VAE latent of the conditioning frame (3, H, W) after SVD's noise augmentation -> (C, h, w), unscaled."""
        noise_aug = self.conditioning.noise_aug_strength if noise_aug is None else noise_aug
        image = image.to(self.device, self.vae.dtype)[None]
        noise = torch.randn(image.shape, generator=generator, device=self.device, dtype=image.dtype)
        return self.vae.encode(image + noise_aug * noise).latent_dist.mode()[0].to(self.dtype)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, batch: int = 8) -> torch.Tensor:
        """Frames (F, 3, H, W) in [-1, 1] -> scaled latents (F, C, h, w)."""
        parts = []
        for i in range(0, frames.shape[0], batch):
            x = frames[i : i + batch].to(self.device, self.vae.dtype)
            parts.append(self.vae.encode(x).latent_dist.mode())
        return (torch.cat(parts) * self.vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, batch: int = 8) -> torch.Tensor:
        """Scaled latents (F, C, h, w) -> frames (F, 3, H, W) in [-1, 1], float32, `batch` frames at a time."""
        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        parts = []
        for i in range(0, latents.shape[0], batch):
            part = latents[i : i + batch]
            parts.append(decode_vae(self.vae, part, part.shape[0]).float())
        return torch.cat(parts).clamp(-1, 1)

    def conditioning_from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """A generated (scaled) latent reused as the next chunk's conditioning latent (unscaled)."""
        return latent / self.vae.config.scaling_factor

    # --- the chunk contract (`families.base.ChunkSampler`) `api.GenProp.propagate` drives -------------
    def prepare_anchor(self, edited: torch.Tensor, prompt: str = "") -> torch.Tensor:
        """What conditions every chunk: the CLIP embedding of the user's edited frame."""
        if prompt:
            raise OptionError("SVD backbones have no text conditioning; --prompt is for Wan variants")
        return self.embed_image(edited)

    def first_condition(self, edited: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.encode_condition(edited, generator)

    def next_condition(self, result: ChunkResult, decoded: torch.Tensor, offset: int) -> torch.Tensor:
        """The latent the previous chunk generated at this chunk's start, used directly (no VAE round trip)."""
        return self.conditioning_from_latent(result.latents[offset])

    def first_frame_change(
        self, condition: torch.Tensor, source_latents: torch.Tensor, region: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What an adapter with `first_frame_change` reads: the conditioning latent (unscaled, (..., C, h, w))
        minus the source's first frame (scaled, (..., F, C, h, w)), in scaled units, on every frame, kept only
        inside `region` ((1, h, w) in [0, 1]) when one is given; None for an adapter that does not read it."""
        if not self.adapter.config.first_frame_change:
            return None
        change = condition.to(source_latents.dtype) * self.vae.config.scaling_factor - source_latents[..., 0, :, :, :]
        if region is not None:
            change = change * region.to(change)
        return change.unsqueeze(-4).expand_as(source_latents)

    # --- sampling ----------------------------------------------------------------------------------
    def _added_time_ids(self, batch: int, cond: SVDConditioning) -> torch.Tensor:
        # SVD was trained on fps - 1 (see diffusers' SVD pipeline).
        ids = torch.tensor([[cond.fps - 1, cond.motion_bucket_id, cond.noise_aug_strength]], dtype=self.dtype)
        return ids.repeat(batch, 1).to(self.device)

    @torch.no_grad()
    def sample_chunk(
        self,
        *,
        source_latents: torch.Tensor,
        condition: torch.Tensor,
        anchor: torch.Tensor,
        task: Task,
        steps: int,
        guidance: float,
        generator: torch.Generator | None = None,
        sce_scale: float = 1.0,
        preserve: bool = False,
        preserve_margin: int = 1,
        preserve_threshold: float = 0.5,
        change_region: torch.Tensor | None = None,
        on_step: StepCallback | None = None,
    ) -> ChunkResult:
        """Denoises one chunk. `source_latents` (F, C, h, w) scaled; `condition` the conditioning latent (C, h, w),
        unscaled; `anchor` the CLIP embedding. With `preserve`, after every step the latents outside the region
        the MPD marks as modified (its calibrated probability above `preserve_threshold`), grown by
        `preserve_margin` latent pixels, are reset to the source's, noised to the step's level (`keep_unmodified`).
        `change_region` limits the first frame's change the adapter reads (`first_frame_change`)."""
        frames, channels, h, w = source_latents.shape
        use_cfg = guidance > 1.0
        batch = 2 if use_cfg else 1

        self.scheduler.set_timesteps(steps, device=self.device)
        shape = (1, frames, channels, h, w)
        latents = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32).to(self.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        # Drawn after the initial noise, so that preserve=False samples exactly what it did without the option.
        known_noise = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32) if preserve else None

        image_latents = condition[None, None].expand(1, frames, -1, -1, -1)
        context = anchor
        if use_cfg:  # unconditional branch first, as in the stock pipeline: no frame, no CLIP context
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
            context = torch.cat([torch.zeros_like(context), context])
        source = source_latents[None].expand(batch, -1, -1, -1, -1)
        change = self.first_frame_change(condition, source_latents, change_region)
        if change is not None:
            change = change[None]
            if use_cfg:  # the unconditional branch sees no frame, so no change either
                change = torch.cat([torch.zeros_like(change), change])
        task_ids = torch.full((batch,), self.adapter.task_id(task), device=self.device, dtype=torch.long)
        time_ids = self._added_time_ids(batch, self.conditioning)

        mask_logits = None
        last = len(self.scheduler.timesteps) - 1
        for i, t in enumerate(self.scheduler.timesteps):
            model_in = self.scheduler.scale_model_input(latents, t).expand(batch, -1, -1, -1, -1)
            model_in = torch.cat([model_in, image_latents], dim=2)
            # The MPD's mask is read after the last step only (every step with preserve): skipping it
            # elsewhere changes nothing in the result and saves its block on every other step.
            out = self.denoiser(
                model_in, t, context, time_ids, source_latents=source, task_ids=task_ids, sce_scale=sce_scale,
                predict_mask=preserve or i == last, mask_samples=1,  # only the conditional branch's is read
                first_frame_change=change,
            )  # fmt: skip
            pred = out.sample
            if use_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance * (cond - uncond)
            if out.mask_logits is not None:
                mask_logits = out.mask_logits[-1:]  # conditional branch
            latents = self.scheduler.step(pred, t, latents).prev_sample
            if known_noise is not None:
                sigma = self.scheduler.sigmas[i + 1]
                latents = keep_unmodified(
                    latents[0], source_latents, self.adapter.mask_probability(mask_logits[0]), sigma, known_noise[0],
                    threshold=preserve_threshold, grow=preserve_margin,
                )[None]
            if on_step is not None:
                on_step(i + 1, steps)
        return ChunkResult(latents=latents[0], mask=self.adapter.mask_probability(mask_logits[0]))

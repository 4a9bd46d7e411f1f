"""GenProp sampling on a Wan 2.x image-to-video backbone (`WanImageToVideoPipeline` folders), one chunk at a time.

It follows the conditioning of diffusers' `WanImageToVideoPipeline` in both of its modes and adds what GenProp
needs (the original video's latents go to the SCE, the task selects the task embedding, the MPD's mask comes
out with the frames):

* **Wan 2.1 I2V** (`expand_timesteps = False`): the first frame followed by black frames is VAE-encoded and
  concatenated on channels to the noisy latents with a 4-channel first-frame mask; CLIP image tokens join
  the text context.
* **Wan 2.2 TI2V** (`expand_timesteps = True`): the first latent frame is replaced by the first frame's latent
  and gets timestep 0 (per-token timesteps); no image encoder.

The Wan VAE is causal in time (4x): latent frame 0 holds frame 0 alone, latent k >= 1 frames 4k-3..4k, so a
chunk of F frames is padded to the next 4k+1 by repeating its last frame and the extra frames are dropped after
decoding. For the same reason the next chunk is conditioned on a DECODED frame of the previous chunk (a latent
from the middle of a chunk covers four frames and cannot serve as a first-frame latent).

Guidance: the unconditional branch uses the negative (empty) prompt and, in 2.1 mode, no first-frame
conditioning, so a scale > 1 amplifies the edited first frame, as in the SVD sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from genprop_cli.config import RuntimeOptions, Task
from genprop_cli.errors import OptionError, WeightsError
from genprop_cli.families import Capabilities, backbone_for
from genprop_cli.families.base import ChunkResult, StepCallback
from genprop_cli.models.genprop import GenPropAdapter
from genprop_cli.pipelines.assembly import attach_adapter, load_sampler


@dataclass(frozen=True)
class WanAnchor:
    """What conditions every chunk of a clip: the prompt (and negative prompt) embeddings and, for Wan 2.1,
    the CLIP tokens of the user's edited frame."""

    prompt_embeds: torch.Tensor  # (1, L, text_dim)
    negative_prompt_embeds: torch.Tensor  # (1, L, text_dim)
    image_embeds: torch.Tensor | None  # (1, T, image_dim) or None


class GenPropWanPipeline:
    """Frozen Wan components + a GenProp adapter; methods are the steps of propagating one chunk (a
    `ChunkSampler`)."""

    family = "wan"
    # No `preserve`: its multistep scheduler (UniPC) keeps a history of model outputs that reset latents
    # would contradict; the pixel --composite works for every family.
    capabilities = Capabilities(vae_tiling=True, attention_backends=True, text=True)

    def __init__(
        self, wan_pipeline, adapter: GenPropAdapter | None = None, *, sce_blocks: int | None = None,
        max_sequence_length: int = 512, device: torch.device | None = None, runtime: RuntimeOptions = RuntimeOptions(),
    ) -> None:  # fmt: skip
        if getattr(wan_pipeline, "transformer_2", None) is not None:
            raise WeightsError("two-expert Wan 2.2 (A14B, transformer_2) backbones are not supported; use TI2V-5B or 2.1 I2V")
        self.vae = wan_pipeline.vae
        self.transformer = wan_pipeline.transformer
        self.text_encoder = wan_pipeline.text_encoder
        self.tokenizer = wan_pipeline.tokenizer
        self.image_encoder = getattr(wan_pipeline, "image_encoder", None)
        self.image_processor = getattr(wan_pipeline, "image_processor", None)
        self.scheduler = wan_pipeline.scheduler
        self.expand_timesteps = bool(wan_pipeline.config.get("expand_timesteps", False))
        self.max_sequence_length = max_sequence_length
        self._device = torch.device(device) if device is not None else self.transformer.device
        self.backbone = backbone_for(self.family, self.transformer)
        self.adapter, self.denoiser, self.offload = attach_adapter(
            self.backbone, adapter, sce_blocks=sce_blocks, device=self._device, dtype=self.dtype, runtime=runtime,
            frozen=(self.vae, self.transformer, self.text_encoder, self.image_encoder),
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
    ) -> GenPropWanPipeline:
        """Loads a `WanImageToVideoPipeline` folder (safetensors only) and the adapter file; the VAE stays in
        float32 (as Wan's own examples run it), the denoiser and encoders in `dtype`."""
        from diffusers import WanImageToVideoPipeline

        return load_sampler(
            cls, WanImageToVideoPipeline, backbone_dir, adapter_file, device=device, dtype=dtype,
            file_variant=file_variant, sce_blocks=sce_blocks, runtime=runtime,
            encoders=("text_encoder", "image_encoder"), vae_dtype=torch.float32,
        )  # fmt: skip

    @property
    def device(self) -> torch.device:
        """Where the computation runs (weights may live in CPU memory with offloading)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def size_multiple(self) -> int:
        """Working width and height must be multiples of this (VAE factor x patch size)."""
        return self.spatial_factor * self.transformer.config.patch_size[1]

    def padded_length(self, frames: int) -> int:
        """The 4k+1 frame count a chunk of `frames` frames is run at."""
        k = self.temporal_factor
        return (frames - 1 + k - 1) // k * k + 1

    # --- conditioning ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Text embeddings (1, L, D), zero past the prompt's tokens, as Wan was trained."""
        tokens = self.tokenizer(
            [prompt], padding="max_length", max_length=self.max_sequence_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )  # fmt: skip
        with self.offload.use(self.text_encoder):
            device = self.text_encoder.device
            ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
            hidden = self.text_encoder(ids, attention_mask=mask).last_hidden_state
            return (hidden * mask[..., None].to(hidden.dtype)).to(self.device, self.dtype)

    @torch.no_grad()
    def embed_image(self, image: torch.Tensor) -> torch.Tensor | None:
        """CLIP tokens (penultimate layer, as Wan 2.1 reads them) of one frame (3, H, W) in [-1, 1]; None
        for backbones without an image encoder (Wan 2.2 TI2V)."""
        if self.image_encoder is None or self.transformer.config.image_dim is None:
            return None
        size = self.image_encoder.config.image_size
        pixels = F.interpolate(image[None].float(), size=(size, size), mode="bicubic", antialias=True)
        with self.offload.use(self.image_encoder):
            pixels = ((pixels.clamp(-1, 1) + 1) / 2).to(self.image_encoder.device)
            mean = torch.tensor(self.image_processor.image_mean, device=pixels.device).view(1, 3, 1, 1)
            std = torch.tensor(self.image_processor.image_std, device=pixels.device).view(1, 3, 1, 1)
            pixels = ((pixels - mean) / std).to(self.image_encoder.dtype)
            hidden = self.image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
            return hidden.to(self.device, self.dtype)

    def prepare_anchor(self, edited: torch.Tensor, prompt: str = "", *, prompt_embeds: torch.Tensor | None = None) -> WanAnchor:
        """Everything that conditions every chunk. `prompt_embeds` skips the text encoder (tests, caches)."""
        if prompt_embeds is None:
            if self.text_encoder is None or self.tokenizer is None:
                raise WeightsError("this Wan backbone has no text encoder/tokenizer; pass precomputed prompt embeddings")
            positive = self.encode_prompt(prompt)
            negative = positive if not prompt else self.encode_prompt("")
        else:
            positive = negative = prompt_embeds.to(self.device, self.dtype)
        return WanAnchor(positive, negative, self.embed_image(edited))

    def first_condition(self, edited: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first chunk is conditioned on the user's edited frame (3, H, W) in [-1, 1]."""
        return edited

    def next_condition(self, result: ChunkResult, decoded: torch.Tensor, offset: int) -> torch.Tensor:
        """The frame the previous chunk generated at this chunk's start (decoded: see the module docstring)."""
        return decoded[offset]

    # --- latents -----------------------------------------------------------------------------------
    def _latent_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, device=device).view(shape)
        std = torch.tensor(self.vae.config.latents_std, device=device).view(shape)
        return mean, std

    @torch.no_grad()
    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(1, 3, F, H, W) in [-1, 1] -> normalised latents (1, C, F_lat, h, w) in the denoiser's dtype."""
        z = self.vae.encode(video.to(self.vae.device, self.vae.dtype)).latent_dist.mode().float()
        mean, std = self._latent_stats(z.device)
        return ((z - mean) / std).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (F, 3, H, W) in [-1, 1] -> normalised latents (C, F_lat, h, w) of the 4k+1-padded chunk."""
        pad = self.padded_length(frames.shape[0]) - frames.shape[0]
        if pad:
            frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
        return self._encode_video(frames.permute(1, 0, 2, 3)[None])[0]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (C, F_lat, h, w) -> frames (F_padded, 3, H, W) in [-1, 1], float32."""
        mean, std = self._latent_stats(self.vae.device)
        z = latents[None].to(self.vae.device, torch.float32) * std + mean
        video = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        return video[0].permute(1, 0, 2, 3).clamp(-1, 1)

    def condition_latents(self, image: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """The first-frame conditioning the transformer reads, for one branch (batch 1)."""
        h, w = image.shape[-2:]
        if self.expand_timesteps:
            return self._encode_video(image[None, :, None])  # (1, C, 1, h, w)
        frames = (latent_frames - 1) * self.temporal_factor + 1
        video = torch.zeros(1, 3, frames, h, w, device=image.device, dtype=image.dtype)
        video[:, :, 0] = image
        latent = self._encode_video(video)
        mask = torch.zeros(1, self.temporal_factor, latent_frames, *latent.shape[-2:], device=latent.device, dtype=latent.dtype)
        mask[:, :, 0] = 1  # the first latent frame (four copies of pixel frame 0) is given
        return torch.cat([mask, latent], dim=1)

    def mask_to_frames(self, mask: torch.Tensor, frames: int) -> torch.Tensor:
        """Latent-frame masks (F_lat, 1, h, w) -> one per pixel frame (frames, 1, h, w), by the VAE's causal layout."""
        k = self.temporal_factor
        index = torch.tensor([0] + [(i - 1) // k + 1 for i in range(1, frames)], device=mask.device)
        return mask[index]

    # --- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_chunk(
        self,
        *,
        source_latents: torch.Tensor,
        condition: torch.Tensor,
        anchor: WanAnchor,
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
        """Denoises one chunk. `source_latents` (C, F_lat, h, w); `condition` the first frame (3, H, W) in [-1, 1].
        `change_region` is not used: Wan adapters do not read the first frame's change."""
        if preserve:
            raise OptionError("--preserve is not available for Wan variants; --composite is")
        channels, latent_frames, h, w = source_latents.shape
        use_cfg = guidance > 1.0
        batch = 2 if use_cfg else 1
        self.scheduler.set_timesteps(steps, device=self.device)
        noise = torch.randn((1, channels, latent_frames, h, w), generator=generator, device=self.device, dtype=torch.float32)
        latents = noise
        cond = self.condition_latents(condition.to(self.device, torch.float32), latent_frames)

        context = anchor.prompt_embeds
        image_tokens = anchor.image_embeds
        branch_cond = cond
        if use_cfg:  # unconditional branch first
            context = torch.cat([anchor.negative_prompt_embeds, context])
            uncond = cond if self.expand_timesteps else torch.zeros_like(cond)
            branch_cond = torch.cat([uncond, cond])
            image_tokens = torch.cat([image_tokens, image_tokens]) if image_tokens is not None else None
        source = source_latents[None].expand(batch, -1, -1, -1, -1)
        task_ids = torch.full((batch,), self.adapter.task_id(task), device=self.device, dtype=torch.long)
        keep = None
        if self.expand_timesteps:  # 0 on the given first latent frame, 1 elsewhere
            keep = torch.ones(1, 1, latent_frames, h, w, device=self.device)
            keep[:, :, 0] = 0

        mask_logits = None
        last = len(self.scheduler.timesteps) - 1
        for i, t in enumerate(self.scheduler.timesteps):
            if self.expand_timesteps:
                model_in = (1 - keep) * branch_cond + keep * latents
                pt, ph, pw = self.transformer.config.patch_size
                timestep = (keep[0, 0, ::pt, ::ph, ::pw] * t).flatten()[None].expand(batch, -1)
            else:
                model_in = torch.cat([latents.expand(batch, -1, -1, -1, -1), branch_cond], dim=1)
                timestep = t.expand(batch)
            out = self.denoiser(
                hidden_states=model_in.to(self.dtype), timestep=timestep, encoder_hidden_states=context,
                encoder_hidden_states_image=image_tokens, source_latents=source, task_ids=task_ids, sce_scale=sce_scale,
                predict_mask=i == last, mask_samples=1,  # read after the last step, conditional branch only
            )  # fmt: skip
            pred = out.sample.float()
            if use_cfg:
                uncond_pred, cond_pred = pred.chunk(2)
                pred = uncond_pred + guidance * (cond_pred - uncond_pred)
            if out.mask_logits is not None:
                mask_logits = out.mask_logits[-1:]
            latents = self.scheduler.step(pred, t, latents, return_dict=False)[0]
            if on_step is not None:
                on_step(i + 1, steps)
        if self.expand_timesteps:
            latents = (1 - keep) * cond + keep * latents
        frames = (latent_frames - 1) * self.temporal_factor + 1
        mask = self.mask_to_frames(self.adapter.mask_probability(mask_logits[0]), frames)
        return ChunkResult(latents=latents[0].to(self.dtype), mask=mask)

"""The training objective on a Wan backbone: rectified-flow (flow-matching) velocity prediction, as Wan was
trained, with the same region-aware loss terms as on SVD.

For a clean latent x0, noise n and a noise level s in (0, 1): the model reads x_s = (1 - s) x0 + s n at
timestep 1000 s (with the first-frame conditioning of the backbone's mode) and is trained to predict the
velocity n - x0. s = shift * u / (1 + (shift - 1) * u) with u logit-normal (SD3's sampling of u; the shift is
the variant scheduler's, so training spends its steps where sampling does). In Wan 2.2 TI2V mode the first
latent frame is the given frame at timestep 0 and is left out of the denoising terms.

The SCE reads the SYNTHETIC clip; the I2V target and its conditioning first frame are the ORIGINAL clip.
Masks follow the causal VAE's frame layout: latent frame 0 is pixel frame 0, latent k frames 4k-3..4k.
`TrainingBatch` layout here: target/source (B, C, F_lat, h, w) normalised latents, condition (B, C', F', h, w)
the backbone's first-frame conditioning, image_embeds (B, T, D) CLIP tokens (Wan 2.1) or None, mask
(B, F_lat, 1, h, w).
"""

from __future__ import annotations

import torch

from genprop_cli.training.losses import LossTerms, LossWeights, combine, draws_source_noised, mpd_only
from genprop_cli.training.objective import (
    FirstFrame,
    NoiseSchedule,
    TrainingBatch,
    encode_batch,
)


def flow_objective(pipeline, schedule: NoiseSchedule) -> FlowObjective:
    """The family's objective factory: the [noise] table is EDM's log-sigma, flow matching takes its noise
    levels from the scheduler's shift instead."""
    return FlowObjective(pipeline)


class FlowObjective:
    """Encodes synthetic pairs with a `GenPropWanPipeline`'s frozen encoders and computes the loss."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.shift = float(getattr(pipeline.scheduler.config, "shift", 1.0) or 1.0)
        self._prompt: torch.Tensor | None = None

    def prompt_embeds(self) -> torch.Tensor:
        """The empty prompt, encoded once (GenProp's propagation reads no text by default)."""
        if self._prompt is None:
            self._prompt = self.pipeline.encode_prompt("")
        return self._prompt

    def encode(self, pairs, generator: torch.Generator) -> TrainingBatch:
        return encode_batch(self.pipeline, pairs, self._first_frame)

    def _first_frame(self, pair, original: torch.Tensor, target: torch.Tensor) -> FirstFrame:
        """The backbone's first-frame conditioning, CLIP tokens (Wan 2.1) and the mask per latent frame."""
        pipe = self.pipeline
        condition = pipe.condition_latents(original[0].to(pipe.device), target.shape[1])[0]
        image = pipe.embed_image(original[0])
        mask = self.latent_frames_mask(torch.from_numpy(pair.mask).float(), target.shape[1])
        return condition, image[0] if image is not None else None, mask

    def latent_frames_mask(self, mask: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """Pixel-frame masks (F, H, W) -> one per latent frame (the union of the frames it holds)."""
        k = self.pipeline.temporal_factor
        groups = [mask[:1]] + [mask[1 + k * i : 1 + k * (i + 1)] for i in range(latent_frames - 1)]
        return torch.stack([g.amax(0) if len(g) else mask[-1] for g in groups])

    def sample_levels(self, batch: int, generator: torch.Generator, device) -> torch.Tensor:
        u = torch.sigmoid(torch.randn(batch, generator=generator, device=device))
        return self.shift * u / (1 + (self.shift - 1) * u)

    def loss(
        self,
        denoiser,
        batch: TrainingBatch,
        weights: LossWeights,
        generator: torch.Generator,
        *,
        levels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> LossTerms:
        """One forward of the GenProp denoiser and the region-aware terms; `levels`/`noise` may be fixed by tests."""
        pipe = self.pipeline
        x0 = batch.target
        b = x0.shape[0]
        device, dtype = x0.device, x0.dtype
        if levels is None:
            levels = self.sample_levels(b, generator, device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
        s = levels.view(b, 1, 1, 1, 1).to(dtype)
        source_noised = draws_source_noised(weights, generator, device)
        noisy = (1 - s) * (batch.source if source_noised else x0) + s * noise
        if pipe.expand_timesteps:
            keep = torch.ones_like(x0[:, :1])
            keep[:, :, 0] = 0
            model_in = (1 - keep) * batch.condition + keep * noisy
            pt, ph, pw = pipe.transformer.config.patch_size
            timestep = (keep[:, 0, ::pt, ::ph, ::pw].flatten(1) * levels[:, None] * 1000).to(dtype)
        else:
            model_in = torch.cat([noisy, batch.condition], dim=1)
            timestep = (levels * 1000).to(dtype)
        mask_channels_first = batch.mask.permute(0, 2, 1, 3, 4)  # (B, 1, F_lat, h, w), the latents' layout
        probe = None
        if weights.grad > 0 and weights.region_aware and not source_noised:
            probe = weights.probe_scale * torch.randn(batch.source.shape, generator=generator, device=device, dtype=dtype)
            probe = probe * mask_channels_first
        out = denoiser(
            hidden_states=model_in.to(pipe.dtype),
            timestep=timestep,
            encoder_hidden_states=self.prompt_embeds().expand(b, -1, -1),
            encoder_hidden_states_image=batch.image_embeds,
            source_latents=batch.source,
            task_ids=batch.task_ids,
            probe=probe,
        )
        per_pixel = (out.sample.float() - (noise - x0).float()).square().permute(0, 2, 1, 3, 4)  # (B, F, C, h, w)
        mask = batch.mask
        first = 1 if pipe.expand_timesteps else 0  # TI2V: the given first frame is not denoised
        terms = combine(per_pixel[:, first:], mask[:, first:], out.mask_logits[:, first:], out.sce_response, weights)
        return mpd_only(terms, weights) if source_noised else terms

"""The training objective on an SVD backbone: EDM-preconditioned v-prediction, as SVD was trained.

For a clean latent x0 and noise level sigma: the noisy latent is x = x0 + sigma * n; the U-Net reads
x / sqrt(sigma^2 + 1) (with the conditioning frame's latent concatenated) at timestep 0.25 * log(sigma);
its output F gives the denoised estimate c_skip * x + c_out * F with c_skip = 1 / (sigma^2 + 1) and
c_out = -sigma / sqrt(sigma^2 + 1) (the same formulas `EulerDiscreteScheduler` uses when sampling); the
per-pixel error is weighted by (sigma^2 + 1) / sigma^2. log(sigma) ~ N(0.7, 1.6), SVD's fine-tuning choice
(the training config's [noise] table, `NoiseSchedule`).

The SCE reads the SYNTHETIC clip; the I2V target and its conditioning first frame are the ORIGINAL clip.
`TrainingBatch` layout here: target/source (B, F, C, h, w) scaled latents, condition (B, C, h, w) unscaled
latent of the first frame, image_embeds (B, 1, D) its CLIP embedding, mask (B, F, 1, h, w).
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


def encode_pairs(pipeline, pairs, generator: torch.Generator) -> TrainingBatch:
    """Runs the frozen VAE / CLIP encoders on a list of `SyntheticPair`s."""

    def first_frame(pair, original: torch.Tensor, target: torch.Tensor) -> FirstFrame:
        condition = pipeline.encode_condition(original[0], generator)
        return condition, pipeline.embed_image(original[0])[0], torch.from_numpy(pair.mask)

    return encode_batch(pipeline, pairs, first_frame)


def sample_sigma(schedule: NoiseSchedule, batch: int, generator: torch.Generator, device) -> torch.Tensor:
    """Training noise levels: log(sigma) ~ N(mean, std), one per clip."""
    log_sigma = torch.randn(batch, generator=generator, device=device) * schedule.log_sigma_std
    return (log_sigma + schedule.log_sigma_mean).exp()


def edm_noisy_input(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor):
    """(sigma broadcastable over x0, the noisy latent x0 + sigma * n, the U-Net's input scaling of it)."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    noisy = x0 + s * noise
    return s, noisy, noisy / (s**2 + 1).sqrt()


def edm_denoised(noisy: torch.Tensor, s: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The denoised estimate from the U-Net's v-prediction: c_skip * x + c_out * F."""
    return noisy / (s**2 + 1) - s / (s**2 + 1).sqrt() * out.to(noisy.dtype)


def denoising_loss(
    denoiser,
    batch: TrainingBatch,
    weights: LossWeights,
    generator: torch.Generator,
    *,
    time_ids: torch.Tensor,
    schedule: NoiseSchedule = NoiseSchedule(),
    sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    first_frame_change: torch.Tensor | None = None,
) -> LossTerms:
    """One forward of the GenProp denoiser on a batch and the region-aware loss terms.

    `denoiser` is the (possibly DDP-wrapped) GenPropDenoiser; `sigma`/`noise` may be fixed by tests;
    `first_frame_change` (B, F, C, h, w) is given exactly when the adapter reads it.
    """
    x0 = batch.target
    b, f = x0.shape[:2]
    device, dtype = x0.device, x0.dtype
    if sigma is None:
        sigma = sample_sigma(schedule, b, generator, device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    source_noised = draws_source_noised(weights, generator, device)
    s, noisy, scaled = edm_noisy_input(batch.source if source_noised else x0, sigma, noise)
    model_in = torch.cat([scaled, batch.condition[:, None].expand(-1, f, -1, -1, -1)], dim=2)
    probe_noise = torch.randn(batch.source.shape, generator=generator, device=device, dtype=dtype)
    wants_probe = weights.grad > 0 and weights.region_aware and not source_noised
    probe = weights.probe_scale * probe_noise * batch.mask if wants_probe else None
    out = denoiser(
        model_in,
        0.25 * sigma.log(),
        batch.image_embeds,
        time_ids.expand(b, -1),
        source_latents=batch.source,
        task_ids=batch.task_ids,
        probe=probe,
        first_frame_change=first_frame_change,
    )
    denoised = edm_denoised(noisy, s, out.sample)
    per_pixel = (s**2 + 1) / s**2 * (denoised - x0).square()
    terms = combine(per_pixel, batch.mask, out.mask_logits, out.sce_response, weights)
    return mpd_only(terms, weights) if source_noised else terms


class EDMObjective:
    """The SVD objective behind the two calls every family's objective answers (`training.objective.Objective`):
    encode, loss. Registered as the family's objective factory, `(sampler, schedule) -> objective`."""

    def __init__(self, pipeline, schedule: NoiseSchedule = NoiseSchedule()) -> None:
        self.pipeline, self.schedule = pipeline, schedule
        self.time_ids = pipeline._added_time_ids(1, pipeline.conditioning).float()

    def encode(self, pairs, generator: torch.Generator) -> TrainingBatch:
        return encode_pairs(self.pipeline, pairs, generator)

    def loss(self, denoiser, batch: TrainingBatch, weights: LossWeights, generator: torch.Generator) -> LossTerms:
        change = self.pipeline.first_frame_change(batch.condition, batch.source)
        return denoising_loss(
            denoiser, batch, weights, generator, time_ids=self.time_ids, schedule=self.schedule,
            first_frame_change=change,
        )  # fmt: skip

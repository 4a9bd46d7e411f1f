"""The tiny random-weight SVD layout (`build-random-tiny --family svd`; the shipped `random-tiny` variant).

Its output is noise-like and is not a result: it exists so that every code path runs anywhere, on a CPU,
in seconds. The shipped copy in `genprop_cli/assets/random-tiny` was made with these settings (seed 0), so
they must not change.
"""

from __future__ import annotations

import torch

# Small enough for a 2-core CPU, but every structural feature of SVD is present: cross-attention down,
# plain down, mid, plain up, cross-attention up, temporal layers, the temporal VAE decoder, a CLIP encoder.
UNET_CONFIG = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=16,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    cross_attention_dim=32,
    num_attention_heads=(2, 4),
    projection_class_embeddings_input_dim=3 * 16,
    addition_time_embed_dim=16,
    num_frames=32,
)
VAE_CONFIG = dict(
    block_out_channels=[32, 32, 32],
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    latent_channels=4,
    layers_per_block=1,
)
CLIP_CONFIG = dict(
    hidden_size=32,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    intermediate_size=37,
    patch_size=8,
)
SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    sigma_max=700.0,
    sigma_min=0.002,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    use_karras_sigmas=True,
)


def build_random_tiny_pipeline(seed: int = 0):
    """A tiny `StableVideoDiffusionPipeline` with random weights (deterministic for a seed)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**UNET_CONFIG)
    vae = AutoencoderKLTemporalDecoder(**VAE_CONFIG)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG)).eval()
    size = CLIP_CONFIG["image_size"]
    feature_extractor = CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )

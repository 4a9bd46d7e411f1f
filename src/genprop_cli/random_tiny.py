"""The `random-tiny` variants: tiny, RANDOMLY INITIALISED models of the real SVD and Wan architectures.

They exist so that every code path (registry, loading, hooks, chunking, I/O) runs anywhere, on a CPU, in
seconds. Their output is noise-like and is not a result. `genprop models build-random-tiny DIR [--family
wan]` rebuilds them; the copies shipped in `genprop_cli/assets/random-tiny{,-wan}` were made with the defaults
below.
"""

from __future__ import annotations

from pathlib import Path

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


# Wan 2.1 I2V layout (36 = 16 noisy + 4 mask + 16 first-frame channels, CLIP image tokens) with every
# structural feature: RoPE, qk RMS norm, cross-attention with added image K/V, the causal 3-D VAE (8x, 4x).
WAN_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=36,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
    image_dim=4,
)
WAN_VAE_CONFIG = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
# Wan 2.2's VAE, which TI2V-5B uses: 2x2 pixel patches in (12 channels), residual blocks, 16x spatial, 48 latent
# channels (a different latent geometry from 2.1's 8x / 16).
WAN22_VAE_CONFIG = dict(
    base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
    is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
    latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
)  # fmt: skip
WAN_TEXT_CONFIG = dict(
    vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
    dropout_rate=0.0,
)  # fmt: skip
WAN_CLIP_CONFIG = dict(
    hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32, intermediate_size=16,
    patch_size=8,
)  # fmt: skip


def build_random_tiny_wan_pipeline(seed: int = 0, *, ti2v: bool = False):
    """A tiny `WanImageToVideoPipeline` with random weights: Wan 2.1 I2V layout, or with `ti2v` the Wan 2.2
    TI2V-5B layout (its VAE: 16x, 48 channels; first latent frame replaced, per-token timesteps, no image
    encoder)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        T5Tokenizer,
        UMT5Config,
        UMT5EncoderModel,
    )

    torch.manual_seed(seed)
    config = dict(WAN_TRANSFORMER_CONFIG)
    if ti2v:
        config.update(in_channels=48, out_channels=48, image_dim=None)
    transformer = WanTransformer3DModel(**config)
    vae = AutoencoderKLWan(**(WAN22_VAE_CONFIG if ti2v else WAN_VAE_CONFIG))
    text_encoder = UMT5EncoderModel(UMT5Config(**WAN_TEXT_CONFIG)).eval()
    tokenizer = T5Tokenizer()  # transformers >= 5 builds one without vocabulary files; tiny encoder, tiny vocab
    image_encoder = image_processor = None
    if not ti2v:
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**WAN_CLIP_CONFIG)).eval()
        size = WAN_CLIP_CONFIG["image_size"]
        image_processor = CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        image_processor=image_processor, image_encoder=image_encoder, transformer=transformer,
        expand_timesteps=ti2v,
    )  # fmt: skip


def build_random_tiny(
    output_dir: Path, seed: int = 0, storage_dtype: torch.dtype = torch.float16, *, family: str = "svd"
) -> tuple[Path, Path]:
    """Writes the backbone (diffusers layout, safetensors) and a zero-initialised adapter; returns both paths.

    Weights are stored in half precision to keep the shipped files small; they load in any dtype.
    """
    from genprop_cli.models.backbones import backbone_for
    from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter

    output_dir = Path(output_dir)
    if family == "svd":
        pipe = build_random_tiny_pipeline(seed)
        denoiser = pipe.unet
    elif family in ("wan", "wan-ti2v"):
        pipe = build_random_tiny_wan_pipeline(seed, ti2v=family == "wan-ti2v")
        denoiser = pipe.transformer
        family = "wan"
    else:
        raise ValueError(f"unknown family {family!r}: svd, wan or wan-ti2v")
    backbone_dir = output_dir / "backbone"
    backbone = backbone_for(family, denoiser)
    adapter = GenPropAdapter(backbone, AdapterConfig(family=family, sce_blocks=backbone.default_sce_blocks))
    pipe.to(dtype=storage_dtype).save_pretrained(backbone_dir, safe_serialization=True)
    adapter_file = output_dir / "adapter.safetensors"
    adapter.to(storage_dtype).save(adapter_file)
    return backbone_dir, adapter_file

"""The real variants' architectures with random weights, built in memory (no download: weights do not change
the cost), for the real-size benchmarks. Configs are the published ones:

* SVD-XT (stabilityai/stable-video-diffusion-img2vid-xt): diffusers' `UNetSpatioTemporalConditionModel`
  defaults (1.52 B), the SD-style `AutoencoderKLTemporalDecoder` (128-256-512-512, 2 layers per block), the
  OpenCLIP ViT-H/14 image encoder (32 x 1280, projection 1024), its Euler scheduler;
* Wan 2.2 TI2V-5B (Wan-AI/Wan2.2-TI2V-5B-Diffusers): the 30 x 3072 transformer (5.0 B), the Wan 2.2 VAE (2x2
  pixel patches, base 160 / decoder 256, 48 latent channels, 16x), UMT5-XXL (24 x 4096, 64 heads) as text
  encoder with a vocabulary-less tokenizer (ids only matter for speed as a count), its UniPC flow scheduler.
"""

from __future__ import annotations

import torch

WAN_TI2V_5B = dict(
    patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, rope_max_seq_len=1024,
)  # fmt: skip
WAN22_VAE = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
)  # fmt: skip
UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
)  # fmt: skip
SVD_VAE = dict(
    block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, layers_per_block=2,
    latent_channels=4, in_channels=3, out_channels=3, sample_size=768,
)  # fmt: skip
VIT_H_14 = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu",
)  # fmt: skip

VARIANTS = {"svd-xt": "svd", "wan-ti2v-5b": "wan"}
REAL_SIZE = {"svd-xt": (1024, 576), "wan-ti2v-5b": (1280, 704)}


def build_svd_xt(device: torch.device, dtype: torch.dtype):
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from genprop_cli.families.svd.tiny import SCHEDULER_CONFIG

    with torch.device(device):  # random init on the device: seconds instead of minutes on the host
        unet = UNetSpatioTemporalConditionModel()
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H_14))
    pipe = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(),
    )  # fmt: skip
    return pipe.to(device, dtype)


def build_wan_ti2v_5b(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    with torch.device(device):
        transformer = WanTransformer3DModel(**WAN_TI2V_5B)
        vae = AutoencoderKLWan(**WAN22_VAE)
        text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    # Wan's own scheduler: multistep UniPC on flow sigmas, shift 5
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = WanImageToVideoPipeline(
        tokenizer=T5Tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=scheduler,
        image_processor=None, image_encoder=None, transformer=transformer, expand_timesteps=True,
    )  # fmt: skip
    pipe.to(device, dtype)
    vae.to(torch.float32)  # the Wan pipelines decode in fp32, as diffusers' examples load the VAE
    return pipe


def build_real_size(variant: str, device: torch.device, dtype: torch.dtype, *, tiny: bool = False):
    """The diffusers pipeline of a real variant, random weights, on `device` in `dtype`; with `tiny`, the
    random-tiny model of the same layout instead (a CPU smoke run of the code around it)."""
    if tiny:
        from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
        from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline

        pipe = build_random_tiny_pipeline() if VARIANTS[variant] == "svd" else build_random_tiny_wan_pipeline(ti2v=True)
        return pipe.to(device, dtype)
    return {"svd-xt": build_svd_xt, "wan-ti2v-5b": build_wan_ti2v_5b}[variant](device, dtype)

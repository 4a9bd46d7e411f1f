"""The tiny random-weight Wan layouts: `wan` (Wan 2.1 I2V) and `wan-ti2v` (Wan 2.2 TI2V-5B).

Their output is noise-like and is not a result: they exist so that every code path runs anywhere, on a CPU,
in seconds. The shipped copy in `genprop_cli/assets/random-tiny-wan` was made with these settings (seed 0),
so they must not change.
"""

from __future__ import annotations

import torch

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


def build_random_tiny_ti2v_pipeline(seed: int = 0):
    """The `wan-ti2v` layout: `build_random_tiny_wan_pipeline(seed, ti2v=True)`."""
    return build_random_tiny_wan_pipeline(seed, ti2v=True)

"""End to end: seconds per output frame and peak memory, the bare diffusers I2V pipeline vs GenProp on the same
backbone, same size, frames, steps and guidance, measured side by side in one run.

    python benchmarks/bench_pipeline.py [--models random-tiny random-tiny-wan] [--frames 32] [--steps 4] [--repeats 3]
    python benchmarks/bench_pipeline.py --real-size --device cuda --models svd-xt --frames 32 --repeats 1
    python benchmarks/bench_pipeline.py --real-size --device cuda --models wan-ti2v-5b --frames 64 --repeats 1

With --real-size the variants' own architectures are built in memory with random weights
(`benchmarks/real_size_models.py`) at their real resolution (SVD-XT 1024x576, Wan 2.2 TI2V-5B 1280x704) and
dtype (fp16, bf16); limits and defaults come from weights.toml. That needs a GPU; `--tiny-stand-ins` runs the
same path with the tiny models of the same layouts, on a CPU.

Each measurement runs in a fresh Python process (so peaks do not mix), bare and GenProp alternating. The bare
side is the stock pipeline call (`StableVideoDiffusionPipeline` / `WanImageToVideoPipeline`) generating
`frames` frames from one image; the GenProp side propagates a `frames`-frame clip in one chunk, which adds
the VAE encoding of the source clip, the SCE and the MPD. Peak memory is the process's peak RSS on the CPU
and `torch.cuda.max_memory_allocated` on CUDA. Timing excludes loading.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
from genprop_cli.api import Clip, GenProp, working_size
from genprop_cli.config import PropagationOptions, Task
side, model_name, frames, steps, guidance, device, real, bench_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8]
torch.manual_seed(0)
if real != "registry":  # the variant's architecture with random weights, built in memory; limits and defaults from weights.toml
    from pathlib import Path
    sys.path.insert(0, bench_dir)
    from real_size_models import REAL_SIZE, build_real_size
    from genprop_cli.families import sampler_class
    from genprop_cli.weights import ResolvedVariant, load_registry
    from dataclasses import replace
    registry = load_registry()
    spec = registry.get(model_name)
    tiny = real == "real-tiny"  # tiny stand-ins of the same layouts: a CPU smoke run of this code
    if tiny:  # at tiny size, or the clip would be scaled up to the real model's pixel budget
        spec = replace(spec, limits=registry.get("random-tiny").limits)
    dtype = torch.float32 if tiny else {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.defaults.dtype]
    diffusers_pipe = build_real_size(model_name, torch.device(device), dtype, tiny=tiny)
    pipe = sampler_class(spec.family)(diffusers_pipe, device=torch.device(device))
    model = GenProp(pipe, ResolvedVariant(spec=spec, backbone_dir=Path("."), adapter_file=None, adapter_sha256=None))
    if side == "bare":  # the stock call below uses the backbone alone: unhook and free the adapter first
        pipe.denoiser.detach()
        del pipe.denoiser, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    w, h = (64, 64) if tiny else REAL_SIZE[model_name]
else:
    model = GenProp.load(model_name, device=device)
    pipe, spec = model.pipeline, model.variant.spec
    w, h = working_size(64, 64, spec.limits, pipe.size_multiple) if spec.limits.max_pixels <= 4096 else working_size(16 * 64, 9 * 64, spec.limits, pipe.size_multiple)
rng = np.random.default_rng(0)
video = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
cuda = pipe.device.type == "cuda"
if side == "bare":
    from diffusers import StableVideoDiffusionPipeline, WanImageToVideoPipeline
    if spec.family == "svd":
        class ResizedCLIP(torch.nn.Module):  # the stock SVD pipeline feeds CLIP 224x224; tiny CLIPs take less
            def __init__(self, encoder):
                super().__init__()
                self.encoder, self.size = encoder, encoder.config.image_size
            device = property(lambda self: self.encoder.device)
            dtype = property(lambda self: self.encoder.dtype)
            def forward(self, pixel_values):
                return self.encoder(torch.nn.functional.interpolate(pixel_values, size=(self.size, self.size), mode="bilinear"))
        encoder = pipe.image_encoder if pipe.image_encoder.config.image_size == 224 else ResizedCLIP(pipe.image_encoder)
        stock = StableVideoDiffusionPipeline(vae=pipe.vae, image_encoder=encoder, unet=pipe.unet, scheduler=pipe.scheduler, feature_extractor=pipe.feature_extractor)
        call = lambda: stock(Image.fromarray(video[0]), height=h, width=w, num_frames=frames, num_inference_steps=steps, min_guidance_scale=guidance, max_guidance_scale=guidance, decode_chunk_size=8, output_type="np", generator=torch.Generator(device=pipe.device).manual_seed(0))
    else:
        stock = WanImageToVideoPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae, scheduler=pipe.scheduler, image_processor=pipe.image_processor, image_encoder=pipe.image_encoder, transformer=pipe.transformer, expand_timesteps=pipe.expand_timesteps)
        empty = pipe.encode_prompt("")  # the stock prompt cleaner needs ftfy; embeddings skip it
        call = lambda: stock(Image.fromarray(video[0]), prompt_embeds=empty, negative_prompt_embeds=empty, height=h, width=w, num_frames=pipe.padded_length(frames), num_inference_steps=steps, guidance_scale=guidance, output_type="np", max_sequence_length=pipe.max_sequence_length, generator=torch.Generator(device=pipe.device).manual_seed(0))
    stock.set_progress_bar_config(disable=True)
else:
    clip = Clip.from_frames(video, video[0])
    options = PropagationOptions(task=Task.EDIT, chunk=32 if frames <= 32 else 64 if frames <= 64 else 128, overlap=8, steps=steps, guidance=guidance, device=device)
    call = lambda: list(model.propagate(clip, options))
if cuda:
    torch.cuda.reset_peak_memory_stats()
with torch.no_grad():
    t0 = time.perf_counter()
    call()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "size": [w, h], "family": spec.family}))
"""


def measure(side: str, model: str, args) -> dict:
    mode = ("real-tiny" if args.tiny_stand_ins else "real") if args.real_size else "registry"
    cmd = [sys.executable, "-c", CHILD, side, model, str(args.frames), str(args.steps), str(args.guidance), args.device,
           mode, str(Path(__file__).resolve().parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} {model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["random-tiny", "random-tiny-wan"])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real-size", action="store_true",
                        help="svd-xt / wan-ti2v-5b with random weights at 1024x576 / 1280x704, built in memory (a GPU)")
    parser.add_argument("--tiny-stand-ins", action="store_true",
                        help="with --real-size: tiny models of the same layouts, to smoke-run this path on a CPU")
    args = parser.parse_args()
    if args.real_size and args.models == parser.get_default("models"):
        args.models = ["svd-xt", "wan-ti2v-5b"]
    print(f"{args.frames} frames, {args.steps} steps, guidance {args.guidance}, {args.device}, median of {args.repeats} "
          "fresh processes per side")
    print(f"{'model':>16} {'family':>6} {'size':>7} {'bare s/frame':>13} {'genprop s/frame':>16} {'ratio':>6} "
          f"{'bare peak MiB':>14} {'genprop peak MiB':>17} {'ratio':>6}")
    for model in args.models:
        runs: dict[str, list[dict]] = {"bare": [], "genprop": []}
        for _ in range(args.repeats):
            for side in runs:
                runs[side].append(measure(side, model, args))
        spf = {s: statistics.median(r["seconds"] for r in rs) / args.frames for s, rs in runs.items()}
        peak = {s: max(r["peak_mib"] for r in rs) for s, rs in runs.items()}
        info = runs["bare"][0]
        size = "x".join(map(str, info["size"]))
        print(f"{model:>16} {info['family']:>6} {size:>7} {spf['bare']:13.4f} {spf['genprop']:16.4f} "
              f"{spf['genprop'] / spf['bare']:6.2f} {peak['bare']:14.0f} {peak['genprop']:17.0f} "
              f"{peak['genprop'] / peak['bare']:6.2f}")


if __name__ == "__main__":
    main()

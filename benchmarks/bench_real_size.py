"""Real-size denoiser steps with random weights: bare backbone vs GenProp (full step and sampling step), with
and without torch.compile, time and peak memory, measured side by side in one run. Needs a GPU for real size.

    python benchmarks/bench_real_size.py [--family svd wan] [--compile off on] [--repeats 5] [--json out.json]
    python benchmarks/bench_real_size.py --tiny --device cpu   # the same code on tiny models (a smoke run)

Backbones, built from their published architectures with random weights (no download; weights do not
change the cost):
* svd: SVD-XT's `UNetSpatioTemporalConditionModel` (diffusers' defaults are SVD-XT's config), fp16, one
  32-frame chunk at 1024x576 (latent 128x72), CFG batch 2, N = 5 (the variant's default: the whole encoder);
* wan: Wan 2.2 TI2V-5B's `WanTransformer3DModel` (30 blocks of 3072, per-token timesteps), bf16, one 64-frame
  chunk (run as 65 frames: 17 latent frames) at 1280x704 (latent 80x44, 14960 tokens), CFG batch 2, 512 text
  tokens, N = 8 (a quarter of the blocks).

Per backbone and compile setting: the bare step (the same module with GenProp's hooks attached but inactive,
so no second copy of the weights is needed), the full GenProp step (SCE + MPD on the whole batch: training),
the preserve step (MPD on the conditional branch only: every sampling step with --preserve) and the sampling
step (MPD skipped: every sampling step but the last). Calls rotate
order from repeat to repeat; ratios are per repeat, medians reported. Peak memory is
`torch.cuda.max_memory_allocated` of one call above what was allocated before it (activations and
workspaces; the weights are reported apart). With --compile on, the blocks are compiled the way `--compile`
does it (`pipelines.acceleration.compile_blocks`), and the warm-up time (compilation) is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from genprop_cli.families import backbone_for
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser
from genprop_cli.pipelines.acceleration import compile_blocks
from real_size_models import WAN_TI2V_5B


@dataclass
class Workload:
    """One backbone at one size: how to build it and what one denoiser call gets."""

    family: str
    label: str
    dtype: torch.dtype
    frames: int  # latent frames per chunk
    latent_hw: tuple[int, int]
    build: Callable[[], nn.Module] = field(repr=False)
    batch: int = 2  # CFG: unconditional + conditional
    text_tokens: int = 512


def real_workloads() -> dict[str, Workload]:
    from diffusers import UNetSpatioTemporalConditionModel, WanTransformer3DModel

    return {
        "svd": Workload("svd", "SVD-XT U-Net, 32 frames at 1024x576", torch.float16, 32, (72, 128),
                        build=UNetSpatioTemporalConditionModel),
        "wan": Workload("wan", "Wan 2.2 TI2V-5B DiT, 65 frames at 1280x704", torch.bfloat16, 17, (44, 80),
                        build=lambda: WanTransformer3DModel(**WAN_TI2V_5B)),
    }  # fmt: skip


def tiny_workloads() -> dict[str, Workload]:
    from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
    from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline

    return {
        "svd": Workload("svd", "tiny SVD U-Net, 8 frames, latent 16x16", torch.float32, 8, (16, 16),
                        build=lambda: build_random_tiny_pipeline(seed=0).unet),
        "wan": Workload("wan", "tiny Wan TI2V DiT, 3 latent frames, latent 16x16", torch.float32, 3, (16, 16),
                        text_tokens=16, build=lambda: build_random_tiny_wan_pipeline(seed=0, ti2v=True).transformer),
    }  # fmt: skip


def denoiser_inputs(work: Workload, model: nn.Module, device: torch.device) -> tuple[dict, torch.Tensor]:
    """Random inputs of the shapes the GenProp pipelines pass, and the source latents."""
    g = torch.Generator(device="cpu").manual_seed(0)
    b, f, (h, w), cfg = work.batch, work.frames, work.latent_hw, model.config

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, work.dtype)

    if work.family == "svd":
        inputs = dict(
            sample=rand(b, f, cfg.in_channels, h, w),
            timestep=torch.tensor([0.5], device=device),
            encoder_hidden_states=rand(b, 1, cfg.cross_attention_dim),
            added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b, device=device, dtype=work.dtype),
        )
        return inputs, rand(b, f, cfg.out_channels, h, w)
    pt, ph, pw = cfg.patch_size
    tokens = (f // pt) * (h // ph) * (w // pw)
    ti2v = cfg.image_dim is None
    inputs = dict(
        hidden_states=rand(b, cfg.in_channels, f, h, w),
        # TI2V: one timestep per token (0 on the given first frame); I2V: one per sample
        timestep=torch.full((b, tokens) if ti2v else (b,), 500.0, device=device),
        encoder_hidden_states=rand(b, work.text_tokens, cfg.text_dim),
        encoder_hidden_states_image=None if ti2v else rand(b, 257, cfg.image_dim),
    )
    return inputs, rand(b, cfg.out_channels, f, h, w)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - t0


def peak_extra_mib(call: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of one call above what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def bench(work: Workload, compiled: bool, repeats: int, device: torch.device) -> dict:
    with torch.device(device):  # random init on the device: seconds, where 5 B parameters take minutes on a host
        model = work.build()
    model = model.to(device, work.dtype).eval().requires_grad_(False)
    backbone = backbone_for(work.family, model)
    n = backbone.default_sce_blocks
    adapter = GenPropAdapter(backbone, AdapterConfig(work.family, n)).to(device, work.dtype)
    if compiled:  # as --compile does it: before the hooks are attached, which then run around the compiled blocks
        compile_blocks([*backbone.all_blocks(), *adapter.blocks()])
    denoiser = GenPropDenoiser(backbone, adapter).eval()
    inputs, source = denoiser_inputs(work, model, device)
    task = torch.ones(work.batch, dtype=torch.long, device=device)
    calls = {
        "bare": lambda: model(**inputs, return_dict=False),
        "full": lambda: denoiser(**inputs, source_latents=source, task_ids=task),
        "preserve": lambda: denoiser(**inputs, source_latents=source, task_ids=task, mask_samples=1),
        "sampling": lambda: denoiser(**inputs, source_latents=source, task_ids=task, predict_mask=False),
    }
    record: dict = {
        "workload": work.label, "family": work.family, "compiled": compiled, "dtype": str(work.dtype).split(".")[-1],
        "M": backbone.num_blocks, "N": n,
        "backbone_params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "adapter_params_M": sum(p.numel() for p in adapter.parameters()) / 1e6,
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        warm = {name: timed(call, device) + timed(call, device) for name, call in calls.items()}
        names = list(calls)
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                times[name].append(timed(calls[name], device))
        record["peak_extra_MiB"] = {name: peak_extra_mib(call, device) for name, call in calls.items()}
    med = statistics.median
    record["warmup_s"] = warm
    record["ms"] = {name: med(t) * 1e3 for name, t in times.items()}
    record["full_over_bare"] = med(f / b for f, b in zip(times["full"], times["bare"], strict=True))
    record["preserve_over_bare"] = med(s / b for s, b in zip(times["preserve"], times["bare"], strict=True))
    record["sampling_over_bare"] = med(s / b for s, b in zip(times["sampling"], times["bare"], strict=True))
    record["block_count_estimate"] = {"full": 1 + (n + 1) / backbone.num_blocks, "sampling": 1 + n / backbone.num_blocks}
    if device.type == "cuda":
        record["weights_MiB"] = torch.cuda.memory_allocated(device) / 2**20
    denoiser.detach()
    return record


def print_table(records: list[dict]) -> None:
    print(f"{'workload':46} {'compile':>7} {'N/M':>6} {'bare ms':>9} {'full ms':>9} {'full/bare':>9} {'est':>6} "
          f"{'presv/bare':>10} {'sampl ms':>9} {'sampl/bare':>10} {'est':>6} {'warm-up s':>9} "
          f"{'peak+ MiB bare/full/presv/sampl':>32}")
    for r in records:
        peaks = r["peak_extra_MiB"]
        peak = "/".join("-" if peaks[k] is None else f"{peaks[k]:.0f}" for k in ("bare", "full", "preserve", "sampling"))
        est = r["block_count_estimate"]
        print(f"{r['workload']:46} {'on' if r['compiled'] else 'off':>7} {r['N']:>2}/{r['M']:<3} {r['ms']['bare']:9.1f} "
              f"{r['ms']['full']:9.1f} {r['full_over_bare']:9.3f} {est['full']:6.3f} {r['preserve_over_bare']:10.3f} "
              f"{r['ms']['sampling']:9.1f} {r['sampling_over_bare']:10.3f} {est['sampling']:6.3f} "
              f"{sum(r['warmup_s'].values()):9.1f} {peak:>32}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=("svd", "wan"), default=["svd", "wan"])
    parser.add_argument("--compile", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny models (fp32): the same code as a quick smoke run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="also write the records here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: real-size runs need a GPU (use --tiny --device cpu for a smoke run)")
    workloads = tiny_workloads() if args.tiny else real_workloads()
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    records = []
    for family in args.family:
        for setting in args.compile:
            torch.manual_seed(0)
            records.append(bench(workloads[family], setting == "on", args.repeats, device))
            print_table(records[-1:])
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print()
    print_table(records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return records


if __name__ == "__main__":
    main()

"""Training speed on the CPU, side by side in one run: float32 vs bf16 autocast (AMX-BF16 where the CPU has
it) for the toy backbone's VAE and U-Net steps and for an adapter step; then gradient checkpointing off vs
on for the adapter (peak memory).

    python benchmarks/bench_train.py [--config configs/toy/backbone-wide.toml] [--steps 20] [--frames 8] [--size 64]
                                     [--repeats 3] [--skip-checkpointing] [--emulated-bf16]

It first names the CPU and times two kernels (a 2048x2048 matmul, a 3x3 convolution at 64 channels) in both
precisions. On a CPU without AVX512-BF16 or AMX, bf16 is emulated (about 100x slower): the model rows then
time float32 only, unless --emulated-bf16 asks for the slow bf16 timings too, and `genprop train` refuses bf16
there, so the adapter's bf16 row is left out.

The precision section builds the toy backbone of --config with random weights and times
one optimizer step (forward, backward, AdamW) on random inputs of the training shapes: the VAE on
`vae_batch_clips x vae_frames` crops, the U-Net on `batch_size x frames` latents. The adapter rows train the
random-tiny variant's adapter (`genprop train`, `mixed_precision` no vs bf16) in fresh processes, as the
checkpointing rows do; steps/s excludes model loading.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from genprop_cli.training.trainer import TrainConfig, train
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
r = train(cfg)
print(json.dumps({"steps_per_s": r.steps_per_s, "peak_rss_mib": r.peak_rss_mib, "total": r.mean_terms_last_10["total"]}))
"""


def _seconds_per_step(step, repeats: int) -> float:
    """Median wall time of `step()` over `repeats` calls after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _train_step(module: torch.nn.Module, forward, bf16: bool):
    """One AdamW step of `module` on the scalar `forward()` returns, under bf16 autocast or not."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward().float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def kernel_rows(repeats: int) -> list[tuple[str, float, float]]:
    """(kernel, fp32 s, bf16 autocast s) for a matmul and a convolution of the toy models' kind."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, conv = torch.randn(2, 64, 64, 64), torch.nn.Conv2d(64, 64, 3, padding=1)
    rows = []
    for name, kernel in (("matmul 2048x2048", lambda: a @ b), ("conv 3x3, 64 ch, 2x64x64", lambda: conv(x))):
        timed = []
        for bf16 in (False, True):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                timed.append(_seconds_per_step(kernel, repeats))
        rows.append((name, *timed))
    return rows


def backbone_precision_rows(config: Path, repeats: int, bf16: bool = True) -> list[tuple[str, float, float | None]]:
    """(component, fp32 s/step, bf16 s/step or None unless `bf16`) for the toy backbone's two training stages."""
    from genprop_cli.families.svd.sampler import decode_vae
    from genprop_cli.training.backbone import BackboneTrainConfig, build_components
    from genprop_cli.training.trainer import read_toml

    cfg = BackboneTrainConfig.from_dict({**read_toml(config), "data": "-", "output": "-"})
    arch = cfg.architecture
    vae, unet, *_ = build_components(arch, cfg.frames, seed=0)
    crops = torch.randn(cfg.vae_batch_clips * cfg.vae_frames, 3, cfg.vae_crop, cfg.vae_crop)
    latent = cfg.size // 4
    unet_in = torch.randn(cfg.batch_size, cfg.frames, 2 * arch.latent_channels, latent, latent)
    embeds = torch.randn(cfg.batch_size, 1, arch.clip_dim)
    times, time_ids = torch.zeros(cfg.batch_size), torch.zeros(cfg.batch_size, 3)
    work = {
        f"VAE ({sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M), {crops.shape[0]} crops {cfg.vae_crop}px":
            (vae, lambda: decode_vae(vae, vae.encode(crops).latent_dist.mode(), cfg.vae_frames)),
        f"U-Net ({sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M), {cfg.batch_size}x{cfg.frames} frames":
            (unet, lambda: unet(unet_in, times, embeds, time_ids).sample),
    }  # fmt: skip
    rows = []
    for name, (module, forward) in work.items():
        fp32 = _seconds_per_step(_train_step(module, forward, False), repeats)
        rows.append((name, fp32, _seconds_per_step(_train_step(module, forward, True), repeats) if bf16 else None))
    return rows


def adapter_run(data: Path, output: Path, args, **options) -> dict:
    cfg = dict(data=str(data), output=str(output), steps=args.steps, frames=args.frames, width=args.size,
               height=args.size, save_every=args.steps, device="cpu", **options)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs/toy/backbone-wide.toml",
                        help="the backbone training config whose VAE and U-Net are timed")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-checkpointing", action="store_true")
    parser.add_argument("--emulated-bf16", action="store_true", help="time the model rows in bf16 on any CPU")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from vis_datasets import scene, write_davis  # the test suite's synthetic DAVIS writer

    from genprop_cli.hardware import cpu_has_native_bf16, cpu_name

    native = cpu_has_native_bf16()
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, bf16 {'native' if native else 'emulated'}")
    print(f"{'kernel':>44} {'fp32 s':>8} {'bf16 s':>8} {'speed-up':>9}")
    for name, fp32, bf16 in kernel_rows(args.repeats):
        print(f"{name:>44} {fp32:8.4f} {bf16:8.4f} {fp32 / bf16:9.3f}")
    print(f"toy backbone training step ({args.config.name}, random weights), median of {args.repeats}")
    print(f"{'component':>44} {'fp32 s':>8} {'bf16 s':>8} {'speed-up':>9}")
    for name, fp32, bf16 in backbone_precision_rows(args.config, args.repeats, bf16=native or args.emulated_bf16):
        if bf16 is None:
            print(f"{name:>44} {fp32:8.3f} {'-':>8} {'-':>9}")
        else:
            print(f"{name:>44} {fp32:8.3f} {bf16:8.3f} {fp32 / bf16:9.2f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_davis(Path(tmp) / "davis", {f"s{i}": scene(frames=24, size=(96, 64), seed=i) for i in range(4)})
        precisions = ("no", "bf16") if native else ("no",)
        precision = {mp: adapter_run(data, Path(tmp) / f"mp-{mp}", args, mixed_precision=mp) for mp in precisions}
        line = (f"adapter (random-tiny), batch 1, {args.frames} frames {args.size}x{args.size}, {args.steps} steps: "
                f"fp32 {precision['no']['steps_per_s']:.2f} steps/s")
        if native:
            line += (f", bf16 {precision['bf16']['steps_per_s']:.2f} steps/s (speed-up "
                     f"{precision['bf16']['steps_per_s'] / precision['no']['steps_per_s']:.2f}); mean loss "
                     f"{precision['no']['total']:.4f} vs {precision['bf16']['total']:.4f}")
        else:
            line += " (bf16: refused by `genprop train` on this CPU)"
        print(line)
        if args.skip_checkpointing:
            return
        for checkpointing in (False, True):
            run = adapter_run(data, Path(tmp) / f"run{checkpointing}", args, gradient_checkpointing=checkpointing)
            rows.append({"checkpointing": checkpointing, **run})
    print(f"train random-tiny adapter on CPU, batch 1, {args.frames} frames {args.size}x{args.size}, {args.steps} steps")
    print(f"{'grad checkpointing':>19} {'steps/s':>8} {'peak RSS MiB':>13} {'mean loss (last 10)':>20}")
    for r in rows:
        print(f"{str(r['checkpointing']):>19} {r['steps_per_s']:8.2f} {r['peak_rss_mib']:13.0f} {r['total']:20.4f}")
    print(f"speed ratio on/off: {rows[1]['steps_per_s'] / rows[0]['steps_per_s']:.3f}, "
          f"peak RSS ratio on/off: {rows[1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}")


if __name__ == "__main__":
    main()

"""Regenerate the toy variant from scratch with the project's own commands, and (optionally) measure it.

    python scripts/build_toy.py                # data -> backbone -> adapter stages 1-5 -> package assets + weights.toml
    python scripts/build_toy.py --ablations    # also the three ablation adapters (same stages, same budget)
    python scripts/build_toy.py --eval         # also the evaluation set and `genprop eval` of everything built
    python scripts/build_toy.py --work build/toy2 --ablations-only --progress checkpoints/ablations
                                               # the ablations alone, resumed from (and, with --save-progress,
                                               # saved to) compact progress small enough to commit

The recipe is issue 12's (docs/results.md): 400 toy clips over varied backgrounds with pans and zooms; the
wide backbone (configs/toy/backbone-wide.toml); the adapter in five stages (configs/toy/adapter-wide*.toml),
each starting from the previous stage's EMA weights. An ablation applies its overlay (configs/toy/ablation-*.toml)
to every stage. Every step is a `genprop` command (printed before it runs) whose output folder under --work is
reused when it is already complete, and a training stage that was interrupted resumes from its last checkpoint,
so the build can be stopped and restarted; a stage with a later stage under way counts as complete (its export
is what that stage started from). Stage times go to WORK/timings.json. On this project's 2-core CPU:
about 8 hours (VAE 35 min, U-Net 50 min, adapter 6.5 h, stage 5's 2250 steps at 3 s each; docs/results.md).
"""

from __future__ import annotations

import argparse
import json
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "toy"
ASSETS = ROOT / "src" / "genprop_cli" / "assets" / "toy"
REGISTRY = ROOT / "weights.toml"
ABLATIONS = ("no-mpd", "no-ra", "no-color-fill")
DATASET = ("--clips", "400", "--frames", "48", "--size", "64", "--seed", "0", "--backgrounds", "all", "--zoom", "0.008")
BACKBONE_CONFIG = "backbone-wide.toml"
#: The evaluation set of --eval: docs/results.md's held-out set val-9200 at the default --per-task 8 (seed 7000,
#: used before, is the probe set the sampling defaults were chosen on).
EVAL_SEED = 9200
ADAPTER_STAGES = (
    "adapter-wide.toml", "adapter-wide-stage2.toml", "adapter-wide-stage3.toml", "adapter-wide-stage4.toml",
    "adapter-wide-stage5-change.toml",
)
BACKBONE_CONFIGS = (
    "model_index.json",
    "feature_extractor/preprocessor_config.json",
    "image_encoder/config.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
)


def genprop(*args: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "genprop_cli", *args]
    print("+ genprop " + " ".join(args), flush=True)
    subprocess.run(command, check=True, env={**os.environ, **(env or {})})


def timed(timings: dict[str, float], name: str, done: bool, run) -> None:
    """Runs a stage unless its output is already complete; records its wall time."""
    if done:
        print(f"= {name}: already built", flush=True)
        return
    started = time.perf_counter()
    run()
    timings[name] = round(time.perf_counter() - started, 1)
    print(f"= {name}: {timings[name]} s", flush=True)


def hashes(folder: Path) -> dict[str, str]:
    from genprop_cli.weights import hash_tree

    return hash_tree(folder)


TOY_DESCRIPTION = ("Toy GenProp trained on a CPU on the toy world (shapes with shadows over textures, gradients, flat "
                   "colours and photos, panning and zooming; 64x64): really propagates edits on toy-like clips; not a "
                   "general-purpose model")


def registry_block(name: str, backbone: str, adapter: str, backbone_hashes: dict[str, str], adapter_sha: str, *,
                   description: str = TOY_DESCRIPTION, native_frames: int = 32) -> str:  # fmt: skip
    """The weights.toml entry of a toy variant (used for the shipped one and for the build's own registry)."""
    files = "\n".join(f'"{k}" = "{v}"' for k, v in sorted(backbone_hashes.items()))
    configs = "\n".join(f'    "{c}",' for c in BACKBONE_CONFIGS)
    adapter_lines = f'source = "{adapter}"\nsha256 = "{adapter_sha}"' if adapter_sha else "published = false\nnote = \"being trained\""
    return f"""[variants.{name}]
description = "{description}"
family = "svd"

[variants.{name}.backbone]
# Made by `python scripts/build_toy.py` (configs/toy/*.toml); fp16 storage.
source = "{backbone}"
configs = [
{configs}
]

[variants.{name}.backbone.files]
{files}

[variants.{name}.adapter]
{adapter_lines}

[variants.{name}.limits]
max_pixels = 4096  # 64 * 64, the training size
multiple_of = 16
max_frames = 100000
native_frames = {native_frames}

[variants.{name}.defaults]
steps = 12
guidance = 1.0
chunk = 32
overlap = 8
dtype = "fp32"
preserve = true  # the MPD's unmodified region is kept anchored to the source while sampling
preserve_margin = 0  # latent pixels regenerated around that region (docs/results.md: 0 vs 1)
# The MPD's calibrated probability above which --preserve regenerates. Removal and tracking regenerate where
# a change is 1 in 5 likely (a missed change leaves a ghost of the object or a marker that lags); edits and
# inserts at an even chance, which keeps 1.2-2.5 dB more of the clip (docs/results.md, ninth session).
preserve_threshold = {{ edit = 0.5, remove = 0.2, insert = 0.5, track = 0.2 }}
"""


def build_registry(work: Path, adapter: Path | None) -> Path:
    """A registry holding only the variant being built, for `genprop train` / `genprop eval` on it."""
    path = work / "registry.toml"
    block = registry_block("toy", "backbone", str(adapter) if adapter else "", hashes(work / "backbone"),
                           _sha(adapter) if adapter else "")
    path.write_text(f'schema_version = 1\ndefault_variant = "toy"\n\n{block}')
    return path


def _sha(path: Path) -> str:
    from genprop_cli.weights import sha256_file

    return sha256_file(path)


def install(work: Path) -> None:
    """Copy backbone + adapter into the package and rewrite the toy entry of weights.toml."""
    if ASSETS.exists():
        shutil.rmtree(ASSETS)
    shutil.copytree(work / "backbone", ASSETS / "backbone")
    export_half(adapter_file(work, "full"), ASSETS / "adapter.safetensors")
    block = registry_block("toy", "package:toy/backbone", "package:toy/adapter.safetensors",
                           hashes(ASSETS / "backbone"), _sha(ASSETS / "adapter.safetensors"))
    write_registry_entry("toy", block)
    print(f"installed {ASSETS} and updated {REGISTRY}", flush=True)


def install_backbone(work: Path, name: str, description: str, native_frames: int) -> None:
    """A trained backbone whose adapter is still to come: package assets + a weights.toml entry with
    `published = false`, so that `genprop train --model NAME` trains the adapter against it."""
    assets = ASSETS.parent / name
    if assets.exists():
        shutil.rmtree(assets)
    shutil.copytree(work / "backbone", assets / "backbone")
    block = registry_block(name, f"package:{name}/backbone", "", hashes(assets / "backbone"), "",
                           description=description, native_frames=native_frames)  # fmt: skip
    write_registry_entry(name, block)
    print(f"installed {assets} and updated {REGISTRY}", flush=True)


def stage_folder(work: Path, run: str, number: int) -> Path:
    return work / f"adapter-{run}-stage{number}"


def furthest_stage(work: Path, run: str) -> int:
    """The last stage of `run` with an export or a checkpoint in `work` (0: none yet)."""
    from genprop_cli.training.trainer import latest_checkpoint

    for number in range(len(ADAPTER_STAGES), 0, -1):
        folder = stage_folder(work, run, number)
        if (folder / "adapter.safetensors").is_file() or latest_checkpoint(folder) is not None:
            return number
    return 0


def save_progress(work: Path, runs: list[str], progress: Path) -> None:
    """Replaces `progress` with what resuming each run needs, small enough to commit: its furthest stage's
    export in fp16 when that stage is finished, else a compact copy of its latest checkpoint, with the log."""
    from genprop_cli.training.trainer import compact_checkpoint, latest_checkpoint

    temp = progress.with_name(f".{progress.name}.partial")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    for run in runs:
        number = furthest_stage(work, run)
        if number == 0:
            continue
        folder = stage_folder(work, run, number)
        kept = temp / folder.name
        kept.mkdir()
        if (folder / "adapter.safetensors").is_file():
            export_half(folder / "adapter.safetensors", kept / "adapter.safetensors")
        else:
            checkpoint = latest_checkpoint(folder)
            compact_checkpoint(checkpoint, kept / "checkpoints" / checkpoint.name)
        for name in ("log.jsonl", "summary.json"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, kept / name)
        print(f"kept {run} stage {number} in {progress / folder.name}", flush=True)
    if (work / "timings.json").is_file():
        shutil.copyfile(work / "timings.json", temp / "timings.json")
    if progress.exists():
        shutil.rmtree(progress)
    temp.replace(progress)


def restore_progress(work: Path, progress: Path) -> None:
    """Copies into `work` what `progress` holds and `work` lacks: files one by one, checkpoints whole (a full
    checkpoint of the same step is kept as it is); timings are merged."""
    for path in sorted(progress.rglob("*")):
        relative = path.relative_to(progress)
        target = work / relative
        if path.is_dir() and path.parent.name == "checkpoints":
            if not target.exists():
                shutil.copytree(path, target)
        elif path.is_file() and "checkpoints" not in relative.parts and path.name != "timings.json":
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    if (progress / "timings.json").is_file():
        saved = json.loads((progress / "timings.json").read_text())
        current = json.loads((work / "timings.json").read_text()) if (work / "timings.json").is_file() else {}
        (work / "timings.json").write_text(json.dumps({**saved, **current}, indent=2))


def adapter_file(work: Path, run: str) -> Path:
    """The exported adapter (EMA weights) of the last stage of `run` ("full" or an ablation)."""
    return work / f"adapter-{run}-stage{len(ADAPTER_STAGES)}" / "adapter.safetensors"


def export_half(source: Path, destination: Path) -> None:
    """Stores an adapter file in fp16, its metadata (the adapter's config) kept: half the package size; loading
    casts it back to the backbone's dtype."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(destination), metadata)


def stage_config(work: Path, stage: str, overlay: Path | None) -> Path:
    """A stage's config, with an ablation's overlay (its [tables]' keys replace the stage's) applied."""
    if overlay is None:
        return CONFIGS / stage
    config = tomllib.loads((CONFIGS / stage).read_text())
    for table, values in tomllib.loads(overlay.read_text()).items():
        config[table] = {**config.get(table, {}), **values} if isinstance(values, dict) else values
    path = work / "configs" / f"{overlay.stem}-{stage}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(config))
    return path


def toml_text(config: dict) -> str:
    """TOML for a training config: top-level scalars, then one level of tables of scalars."""
    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, (bool, str)) else repr(v)

    lines = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for table, values in ((k, v) for k, v in config.items() if isinstance(v, dict)):
        lines += ["", f"[{table}]", *(f"{k} = {value(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def write_registry_entry(name: str, block: str) -> None:
    """Replaces (or appends) the generated entry of variant `name` between its markers in weights.toml."""
    text = REGISTRY.read_text()
    begin, end = f"# >>> {name} variant (scripts/build_toy.py)\n", f"# <<< {name} variant\n"
    generated = begin + block + end
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: generated, text, flags=re.DOTALL)
    else:
        text = text.rstrip("\n") + "\n\n\n" + generated
    REGISTRY.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy", help="build folder")
    parser.add_argument("--ablations", action="store_true", help="also train the three ablation adapters")
    parser.add_argument("--ablations-only", action="store_true",
                        help="train only the ablation adapters (the full run is the shipped one); implies --no-install")
    parser.add_argument("--progress", type=Path, help="compact progress to resume from (copied into --work first)")
    parser.add_argument("--save-progress", action="store_true",
                        help="only write the runs' compact progress to --progress (replacing it) and stop")
    parser.add_argument("--mixed-precision", choices=("no", "bf16"),
                        help="override the configs' bf16 autocast (no: float32, on CPUs without AVX512-BF16 or AMX)")
    parser.add_argument("--eval", action="store_true", help="also make the evaluation set and run genprop eval")
    parser.add_argument("--no-install", action="store_true", help="leave the package assets and weights.toml alone")
    parser.add_argument("--adapter-steps", type=int, help="override the adapters' step count (smoke runs)")
    parser.add_argument("--per-task", type=int, default=8, help="evaluation examples per task")
    parser.add_argument("--install-backbone", metavar="NAME",
                        help="only install WORK/backbone as variant NAME (adapter unpublished) and stop")
    parser.add_argument("--description", default=TOY_DESCRIPTION, help="with --install-backbone")
    parser.add_argument("--native-frames", type=int, default=32, help="with --install-backbone")
    args = parser.parse_args()
    if args.install_backbone:
        install_backbone(args.work, args.install_backbone, args.description, args.native_frames)
        return 0
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    ablations = args.ablations or args.ablations_only
    run_names = ([] if args.ablations_only else ["full"]) + (list(ABLATIONS) if ablations else [])
    if args.save_progress:
        if args.progress is None:
            parser.error("--save-progress needs --progress DIR")
        save_progress(work, run_names, args.progress)
        return 0
    if args.progress is not None and args.progress.is_dir():
        restore_progress(work, args.progress)
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    data = work / "data"
    precision = ["--mixed-precision", args.mixed_precision] if args.mixed_precision else []
    timed(timings, "dataset", (data / "JPEGImages").is_dir(), lambda: genprop("toy", "dataset", str(data), *DATASET))
    if args.ablations_only and not (work / "backbone").exists():
        shutil.copytree(ASSETS / "backbone", work / "backbone")  # the shipped run's backbone
    timed(timings, "backbone", (work / "backbone" / "model_index.json").is_file(),
          lambda: genprop("toy", "train-backbone", "--data", str(data), "-o", str(work),
                          "--config", str(CONFIGS / BACKBONE_CONFIG), *precision, "-q"))
    env = {"GENPROP_REGISTRY": str(build_registry(work, None))}
    runs = {name: None if name == "full" else CONFIGS / f"ablation-{name}.toml" for name in run_names}
    # Run by run: a run's progress is one compact checkpoint or export, so each session commits about 15 MB
    # (stage by stage across runs would keep up to three).
    for name, overlay in runs.items():
        furthest = furthest_stage(work, name)
        for number, stage in enumerate(ADAPTER_STAGES, start=1):
            folder = stage_folder(work, name, number)
            previous = stage_folder(work, name, number - 1) / "adapter.safetensors"
            init = ["--init-adapter", str(previous)] if number > 1 else []
            steps = ["--steps", str(args.adapter_steps)] if args.adapter_steps else []
            config = stage_config(work, stage, overlay)
            timed(timings, folder.name, (folder / "adapter.safetensors").is_file() or number < furthest,
                  lambda folder=folder, config=config, init=init, steps=steps: genprop(
                      "train", "--model", "toy", "--data", str(data), "-o", str(folder), "--config", str(config),
                      *init, *steps, *precision, "-q", env=env))  # fmt: skip
            timings_file.write_text(json.dumps(timings, indent=2))
    if not (args.no_install or args.ablations_only):
        install(work)
    if args.eval:
        eval_set = work / "eval"
        timed(timings, "eval-set", (eval_set / "index.json").is_file(),
              lambda: genprop("toy", "eval-set", str(eval_set), "--per-task", str(args.per_task), "--frames", "32",
                              "--size", "64", "--seed", str(EVAL_SEED)))
        full = ASSETS / "adapter.safetensors" if args.ablations_only else adapter_file(work, "full")
        env = {"GENPROP_REGISTRY": str(build_registry(work, full))}
        extra = [a for name in runs if name != "full" for a in ("--adapter", f"{name}={adapter_file(work, name)}")]
        timed(timings, "eval", False,
              lambda: genprop("eval", str(eval_set), "--model", "toy", *extra, "-o", str(work / "report"), "--overwrite",
                              "--device", "cpu", "-q", env=env))
    timings_file.write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the toy variant from scratch with the project's own commands, and (optionally) measure it.

    python scripts/build_toy.py                # data -> backbone -> adapter -> package assets + weights.toml
    python scripts/build_toy.py --ablations    # also the three ablation adapters (same budget)
    python scripts/build_toy.py --eval         # also the evaluation set and `genprop eval` of everything built

Every stage is a `genprop` command (printed before it runs) whose output folder under --work is reused
when it is already complete, so an interrupted build resumes at the stage it stopped in. Stage times go
to WORK/timings.json.
"""

from __future__ import annotations

import argparse
import json
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


TOY_DESCRIPTION = ("Toy GenProp trained on the toy world (shapes over a panning texture, 64x64) on a CPU: really "
                   "propagates edits on toy-like clips; not a general-purpose model")


def registry_block(name: str, backbone: str, adapter: str, backbone_hashes: dict[str, str], adapter_sha: str, *,
                   description: str = TOY_DESCRIPTION, native_frames: int = 16) -> str:  # fmt: skip
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
    shutil.copy2(work / "adapter-full" / "adapter.safetensors", ASSETS / "adapter.safetensors")
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
    parser.add_argument("--eval", action="store_true", help="also make the evaluation set and run genprop eval")
    parser.add_argument("--no-install", action="store_true", help="leave the package assets and weights.toml alone")
    parser.add_argument("--adapter-steps", type=int, help="override the adapters' step count (smoke runs)")
    parser.add_argument("--per-task", type=int, default=8, help="evaluation examples per task")
    parser.add_argument("--install-backbone", metavar="NAME",
                        help="only install WORK/backbone as variant NAME (adapter unpublished) and stop")
    parser.add_argument("--description", default=TOY_DESCRIPTION, help="with --install-backbone")
    parser.add_argument("--native-frames", type=int, default=16, help="with --install-backbone")
    args = parser.parse_args()
    if args.install_backbone:
        install_backbone(args.work, args.install_backbone, args.description, args.native_frames)
        return 0
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    data = work / "data"
    timed(timings, "dataset", (data / "JPEGImages").is_dir(),
          lambda: genprop("toy", "dataset", str(data), "--clips", "240", "--frames", "32", "--size", "64", "--seed", "0"))
    timed(timings, "backbone", (work / "backbone" / "model_index.json").is_file(),
          lambda: genprop("toy", "train-backbone", "--data", str(data), "-o", str(work),
                          "--config", str(CONFIGS / "backbone.toml"), "-q"))
    env = {"GENPROP_REGISTRY": str(build_registry(work, None))}
    runs = {"full": CONFIGS / "adapter.toml"}
    if args.ablations:
        runs |= {name: CONFIGS / f"ablation-{name}.toml" for name in ABLATIONS}
    for name, config in runs.items():
        folder = work / f"adapter-{name}"
        timed(timings, f"adapter-{name}", (folder / "adapter.safetensors").is_file(),
              lambda folder=folder, config=config: genprop(
                  "train", "--model", "toy", "--data", str(data), "-o", str(folder), "--config", str(config), "-q",
                  *(["--steps", str(args.adapter_steps)] if args.adapter_steps else []), env=env))
        timings_file.write_text(json.dumps(timings, indent=2))
    if not args.no_install:
        install(work)
    if args.eval:
        eval_set = work / "eval"
        timed(timings, "eval-set", (eval_set / "index.json").is_file(),
              lambda: genprop("toy", "eval-set", str(eval_set), "--per-task", str(args.per_task), "--frames", "24", "--size", "64",
                              "--seed", "1000"))
        env = {"GENPROP_REGISTRY": str(build_registry(work, work / "adapter-full" / "adapter.safetensors"))}
        extra = [a for name in runs if name != "full" for a in ("--adapter", f"{name}={work / f'adapter-{name}' / 'adapter.safetensors'}")]
        timed(timings, "eval", False,
              lambda: genprop("eval", str(eval_set), "--model", "toy", *extra, "-o", str(work / "report"), "--overwrite",
                              "--device", "cpu", "-q", env=env))
    timings_file.write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

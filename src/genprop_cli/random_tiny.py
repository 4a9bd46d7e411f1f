"""The `random-tiny` variants: tiny, RANDOMLY INITIALISED models of each family's real architecture.

They exist so that every code path (registry, loading, hooks, chunking, I/O) runs anywhere, on a CPU, in
seconds. Their output is noise-like and is not a result. Each family declares its tiny layouts in the
registry (`families.tiny_layouts()`: svd, wan, wan-ti2v) and builds them in its `tiny.py`;
`genprop models build-random-tiny DIR [--family LAYOUT]` writes one. The copies shipped in
`genprop_cli/assets/random-tiny{,-wan}` were made with the defaults (seed 0, float16 storage).
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_random_tiny(
    output_dir: Path, seed: int = 0, storage_dtype: torch.dtype = torch.float16, *, family: str = "svd"
) -> tuple[Path, Path]:
    """Writes the backbone of the tiny layout `family` (diffusers layout, safetensors) and a zero-initialised
    adapter; returns both paths.

    Weights are stored in half precision to keep the shipped files small; they load in any dtype.
    """
    from genprop_cli.families import get_family, tiny_layouts
    from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter

    layouts = tiny_layouts()
    if family not in layouts:
        raise ValueError(f"unknown tiny layout {family!r}: {', '.join(layouts)}")
    entry = get_family(layouts[family])
    pipe = entry.tiny(family)(seed)
    backbone_class = entry.backbone()
    backbone = backbone_class(getattr(pipe, backbone_class.component))
    adapter = GenPropAdapter(backbone, AdapterConfig(family=entry.name, sce_blocks=backbone.default_sce_blocks))
    output_dir = Path(output_dir)
    backbone_dir = output_dir / "backbone"
    pipe.to(dtype=storage_dtype).save_pretrained(backbone_dir, safe_serialization=True)
    adapter_file = output_dir / "adapter.safetensors"
    adapter.to(storage_dtype).save(adapter_file)
    return backbone_dir, adapter_file

"""Shared by the per-family model tests: run a GenProp denoiser once with its MPD as usual and once with a
`predict_mask` / `mask_samples` variant, counting the rows each MPD block call received."""

from __future__ import annotations

import torch


def full_and_variant(denoiser, inputs: dict, source: torch.Tensor, **variant):
    """(full output, variant output, rows per MPD call), with the SCE injections made live so that the SCE
    changes the prediction (as a trained adapter does) and tasks 1 and 2 for the batch of two."""
    rows: list[int] = []
    handle = denoiser.adapter.mpd.block.register_forward_hook(lambda _m, _a, out: rows.append(out.shape[0]))
    task = torch.tensor([1, 2])
    try:
        with torch.no_grad():
            for inj in denoiser.adapter.sce.injections:
                torch.nn.init.normal_(inj.weight, std=0.05)
            full = denoiser(**inputs, source_latents=source, task_ids=task)
            other = denoiser(**inputs, source_latents=source, task_ids=task, **variant)
    finally:
        handle.remove()
    return full, other, rows

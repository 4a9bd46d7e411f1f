"""What this machine runs fast: bfloat16 is native only on CPUs with AVX512-BF16 or AMX.

Elsewhere (AVX2 CPUs such as AMD EPYC Milan) oneDNN emulates bf16, and a training step under bf16 autocast runs
orders of magnitude slower than in float32 (docs/results.md, twelfth session, on an AMD EPYC: a 3x3 convolution
91x slower, a 2048x2048 matmul 446x). Asking for bf16 there is refused with the option that fixes it, rather than
left to run for days.
"""

from __future__ import annotations

import torch

from genprop_cli.errors import OptionError


def _capabilities() -> dict:
    """torch's reading of this CPU's features (empty on builds without it)."""
    return torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16)."""
    capabilities = _capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def cpu_name() -> str:
    return str(_capabilities().get("cpu_name") or torch.backends.cpu.get_cpu_capability())


def check_bf16_runs_natively(device: torch.device, fix: str) -> None:
    """An OptionError when bf16 compute is asked for on a CPU that only emulates it; `fix` names the option to
    change (e.g. `--mixed-precision no`)."""
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise OptionError(
            f"bf16 on this CPU ({cpu_name()}: no AVX512-BF16 or AMX) is emulated and runs about 100x slower than "
            f"float32; use {fix}"
        )

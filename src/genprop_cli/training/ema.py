"""Exponential moving average of trained weights, shared by the adapter and the backbone trainers."""

from __future__ import annotations

from typing import Any

import torch

from genprop_cli.errors import OptionError


def check_decay(decay: float | None) -> None:
    """An OptionError unless a configured `ema_decay` is None (no EMA) or in (0, 1)."""
    if decay is not None and not 0 < decay < 1:
        raise OptionError(f"ema_decay must be in (0, 1), got {decay}")


class EMA:
    """Exponential moving average of weights (a checkpointable object for Accelerate).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (diffusers' EMAModel does the
    same): with a fixed 0.999, a 1000-step run would still hold 37% of its random initialisation.
    """

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1 - self.current_decay()
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), weight)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.updates = int(state.get("updates", 10**9))  # older checkpoints: no warm-up left
        for s, loaded in zip(self.shadow, state["shadow"]):
            s.copy_(loaded)

    @torch.no_grad()
    def copy_to(self, params: list[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, params):
            p.copy_(s)

"""The EMA the trainers share: warm-up of its decay, and a checkpoint round trip."""

from __future__ import annotations

import torch

from genprop_cli.training.ema import EMA


def test_decay_warms_up_so_the_initialisation_fades_fast():
    weight = torch.nn.Parameter(torch.zeros(1))
    ema = EMA([weight], decay=0.999)
    with torch.no_grad():
        weight.fill_(1.0)  # trained away from the initial 0 at once
    for _ in range(1000):
        ema.update()
    # A fixed 0.999 would still hold 0.999 ** 1000 = 37% of the initial value; the warm-up leaves under 1%.
    assert ema.shadow[0].item() > 0.99
    assert ema.current_decay() == 1001 / 1010  # still warming up towards 0.999


def test_state_round_trip_keeps_the_warm_up_position():
    weight = torch.nn.Parameter(torch.ones(2))
    ema = EMA([weight], decay=0.9)
    for _ in range(3):
        ema.update()
    copy = EMA([torch.nn.Parameter(torch.zeros(2))], decay=0.5)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 3 and copy.decay == 0.9 and copy.current_decay() == ema.current_decay()
    torch.testing.assert_close(copy.shadow[0], ema.shadow[0])

"""What every family's sampler shares: runtime options (`acceleration.py`) and quiet library loading.

The samplers themselves live in their family's folder (`families/<name>/sampler.py`), behind the
`ChunkSampler` protocol of `families/base.py`; `families.sampler_class(name)` finds one by family name.
"""

from __future__ import annotations


def quiet_libraries() -> None:
    """diffusers/transformers print load progress bars and advice; genprop has its own progress display."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()

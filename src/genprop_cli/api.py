"""The Python API under the CLI, in one import: load a variant once, then run requests through it.

    from genprop_cli.api import GenProp, RunRequest, PropagationOptions, OutputOptions, Task, render

    model = GenProp.load()                                   # default variant from weights.toml
    request = RunRequest(video="clip.mp4", first_frames=("edited.png",), options=PropagationOptions(task=Task.REMOVE))
    for frame in model.frames(model.plan(request)):          # frames arrive chunk by chunk, in order
        ...
    render(model, request)                                   # the video (original audio kept), masks, preview

The parts live by concern: `config` (every option), `clip` (inputs and output frames), `plan` (a request
resolved once), `propagation` (the loaded model running a plan), `render` (writing the outputs).
"""

from __future__ import annotations

from genprop_cli.clip import Clip, Keyframe, OutputFrame, place_edits, to_model_frames
from genprop_cli.config import (
    EncoderOptions,
    InputLimits,
    ModelOptions,
    OutputOptions,
    Placement,
    PropagationOptions,
    RunRequest,
    RuntimeOptions,
    Task,
)
from genprop_cli.plan import RunPlan, default_masks_dir, default_output_path, plan_inputs, working_size
from genprop_cli.propagation import GenProp, ProgressCallback, ProgressEvent, propagate
from genprop_cli.render import RenderResult, out_of_memory_advice, render

__all__ = [
    "Clip", "EncoderOptions", "GenProp", "InputLimits", "Keyframe", "ModelOptions", "OutputFrame", "OutputOptions",
    "Placement", "ProgressCallback", "ProgressEvent", "PropagationOptions", "RenderResult", "RunPlan", "RunRequest",
    "RuntimeOptions", "Task", "default_masks_dir", "default_output_path", "out_of_memory_advice", "place_edits",
    "plan_inputs", "propagate", "render", "to_model_frames", "working_size",
]  # fmt: skip

"""The toy world: procedural shape clips with exact ground truth for remove, edit, insert and track."""

from genprop_cli.toy.export import (
    read_eval_example,
    read_eval_set,
    write_davis,
    write_eval_set,
)
from genprop_cli.toy.world import (
    MARKER,
    RenderOutput,
    Scene,
    Shadow,
    Shape,
    ToyExample,
    Trajectory,
    make_edit,
    make_example,
    make_insert,
    make_remove,
    make_track,
    render,
    sample_scene,
    toy_example,
)

__all__ = [
    "MARKER",
    "RenderOutput",
    "Scene",
    "Shadow",
    "Shape",
    "ToyExample",
    "Trajectory",
    "make_edit",
    "make_example",
    "make_insert",
    "make_remove",
    "make_track",
    "read_eval_example",
    "read_eval_set",
    "render",
    "sample_scene",
    "toy_example",
    "write_davis",
    "write_eval_set",
]

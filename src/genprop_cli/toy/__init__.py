"""The toy world: procedural shape clips with exact ground truth for remove, edit, insert and track.

`world` draws and renders scenes; `export` writes them as datasets and evaluation sets. The names the rest
of the project uses are re-exported here.
"""

from genprop_cli.toy.export import read_eval_set, write_davis, write_eval_set
from genprop_cli.toy.world import MARKER, toy_example

__all__ = ["MARKER", "read_eval_set", "toy_example", "write_davis", "write_eval_set"]

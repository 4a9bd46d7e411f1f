"""The toy world: procedural shape clips with exact ground truth for remove, edit, insert and track."""

from genprop_cli.toy import export, world
from genprop_cli.toy.export import *
from genprop_cli.toy.world import *

__all__ = world.__all__ + export.__all__

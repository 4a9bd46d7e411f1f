"""The third family's sampler: SVD's, under the family's own name and capabilities, counting its chunks."""

from genprop_cli.families import Capabilities
from genprop_cli.families.base import ChunkResult
from genprop_cli.families.svd.sampler import GenPropSVDPipeline


class ThirdSampler(GenPropSVDPipeline):
    family = "third"
    capabilities = Capabilities()  # no --preserve, although the SVD sampler it reuses could

    def sample_chunk(self, **kwargs) -> ChunkResult:
        self.sampled = getattr(self, "sampled", 0) + 1
        return super().sample_chunk(**kwargs)

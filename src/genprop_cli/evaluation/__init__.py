"""Evaluation of propagated videos: `metrics` (pixel and mask metrics, numpy), `clip_score` (CLIP-T / CLIP-I,
torch and transformers, imported only by who needs it), `baselines` (classical methods) and `runner`
(`genprop eval`)."""

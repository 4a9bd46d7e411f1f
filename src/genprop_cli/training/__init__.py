"""Training GenProp's adapter: video instance segmentation data, synthetic pairs, losses and the trainer."""

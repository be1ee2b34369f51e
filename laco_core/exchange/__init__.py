"""What goes in and out: exports and model cards, mergekit configs, the lm-evaluation-harness bridge."""

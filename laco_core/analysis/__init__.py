"""Measuring a model: cached activations, layer similarity, perplexity and KL, generation, layer-drop baselines, worker threads."""

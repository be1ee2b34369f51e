"""What owns models and jobs while the app and the CLI run: the engine, its memory budget and caches, jobs, builds, comparisons."""

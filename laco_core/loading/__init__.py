"""Turning a model spec into a loaded model: resolve, check, read, build (embedded GGUFs, devices, the limits of hosted mode)."""

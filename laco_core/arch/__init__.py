"""Model structure every other part reads: architecture adapters, layer plans and maps, shared copies, attention sub-blocks, tokenization with BOS, tiny test models."""

"""Model zoo used by torchship.edge tests, demo and benchmarks (plain ``torch.nn`` modules)."""

"""torchship examples: kernels written in the tile language, and models (import from repo root)."""

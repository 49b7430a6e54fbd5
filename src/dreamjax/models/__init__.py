"""V, M and C: pure Flax modules (PAPER.md §1.3-1.5) and the kernels that make them fast."""

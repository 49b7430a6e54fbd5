"""Evolution strategies over controllers (PAPER.md §1.6): evosax strategies and the ES loop."""

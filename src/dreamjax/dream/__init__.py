"""The dream: M as a gymnax environment, and population rollouts inside it (PAPER.md §2.5)."""

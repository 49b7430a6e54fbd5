"""The dream: M as a gymnax environment (`env`, no file I/O) and population rollouts inside it
(`rollout`), PAPER.md §2.5."""

"""Episodes on disk and their collection in the real env, streaming batches for V and M, latent
series (PAPER.md §1.2).

`episodes` (the file format), `policies` (random collection policies and per-episode seeds),
`collect` (recording episodes through `dreamjax.envs.pool`), `batches` (frame and sequence
streams), `series` (V's encodings of the episodes). Nothing is re-exported here, so importing the
NumPy-only modules (`episodes`, `batches`, `series`) never imports JAX.
"""

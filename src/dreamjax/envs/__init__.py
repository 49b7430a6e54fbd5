"""Real environments (gymnasium CarRacing-v3) and the env-agnostic worker pool."""

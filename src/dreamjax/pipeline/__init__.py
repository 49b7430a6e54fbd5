"""The experiment pipeline: run folder and stages, artifact loaders, evaluation, the report."""

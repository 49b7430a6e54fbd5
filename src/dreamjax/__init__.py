"""dreamjax: World Models (Ha & Schmidhuber 2018) in JAX."""

__version__ = "0.1.0"

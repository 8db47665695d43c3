"""Built-in encoder plugins, registered in pyproject.toml like any third-party plugin."""

"""ml_collections configs of the experiments (one ``get_config()`` per file)."""

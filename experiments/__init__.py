"""Entry points: ``python -m experiments.<name> --config=... --workdir=...``."""

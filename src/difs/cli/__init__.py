"""The ``difs`` command."""

"""mailyard: a complete, fast mail server in one coherent Python program."""

__version__ = "0.1.0"

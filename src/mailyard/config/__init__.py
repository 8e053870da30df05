"""One TOML file → typed, validated settings.

`load(path)` returns a frozen `Settings`; any problem raises `ConfigError`, whose message
names the file, the key and what is wrong, on one line. Every setting has a default that
works, so `load(None)` gives a runnable server with data under ./var.
"""

from mailyard.config.errors import ConfigError
from mailyard.config.loader import find_config_file, load, parse_hostport, render_example
from mailyard.config.schema import Settings

__all__ = [
           "ConfigError",
           "Settings",
           "find_config_file",
           "load",
           "parse_hostport",
           "render_example",
]

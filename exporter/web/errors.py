"""Errors of the web configuration file: each message is one line naming the file and the key."""

from __future__ import annotations

from exporter.config import ConfigError


class WebConfigError(ConfigError):
    """The web configuration file cannot be used. The message is one line naming file and key."""


class WebConfigExtraMissingError(WebConfigError):
    """--web.config.file was given but PyYAML or bcrypt (the ``web`` extra) is not installed."""


class WebConfigReadError(WebConfigError):
    """The web configuration file, or a file it names, cannot be read."""


class WebConfigSyntaxError(WebConfigError):
    """The file is not YAML, not a mapping, or repeats a key."""


class WebConfigUnknownKeyError(WebConfigError):
    """A key that exporter-toolkit does not define (a typo must not switch security off)."""


class WebConfigValueError(WebConfigError):
    """A value of the wrong type or outside the allowed set."""


class WebConfigUnsupportedError(WebConfigError):
    """Valid for exporter-toolkit, but not something Python's ssl module can do."""


class WebConfigTLSError(WebConfigError):
    """The certificate, key or client CA file does not load."""

"""Running mailyard: the App that owns shared components, the listeners, the signals."""

from mailyard.server.app import App

__all__ = ["App"]

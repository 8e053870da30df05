"""Running mailyard: the App that owns shared components, the listeners, the signals.

`App` is imported on first use, not with the package: the process pool's fork server
imports `mailyard.server.pool_warm` and must not pay for asyncio and the config
(`app`'s imports) before it starts loading a signature database."""

__all__ = ["App"]


def __getattr__(name: str):
    if name == "App":
        from mailyard.server.app import App

        return App
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

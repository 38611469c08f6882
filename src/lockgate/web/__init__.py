"""The web console: ``lockgate ui`` alone, or ``lockgate serve --ui`` beside the model server.

::

    from lockgate.web import create_ui_app
    app = create_ui_app(Lockgate.open(), auth=True)
"""

from lockgate.web.console import MetricsSource, attach_console, create_ui_app, ui_routes

__all__ = ["MetricsSource", "attach_console", "create_ui_app", "ui_routes"]

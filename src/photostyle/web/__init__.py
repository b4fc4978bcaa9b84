"""The web page (``photostyle serve``): FastAPI app, one worker thread, one static page.

Needs the ``web`` extra: ``pip install 'photostyle[web]'``.
"""

from .app import access, create_app, examples_dir

__all__ = ["access", "create_app", "examples_dir"]

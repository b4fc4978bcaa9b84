"""The web page (``photostyle serve``): FastAPI app, one worker thread, one static page.

Needs the ``web`` extra: ``pip install 'photostyle[web]'``.
"""

from .app import create_app, examples_dir

__all__ = ["create_app", "examples_dir"]

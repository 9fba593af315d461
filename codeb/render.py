"""Render the repository's Jinja2 templates with explicit values.

Templates are rendered on the control node and uploaded as file objects, so
values (secrets included) never become operation arguments that pyinfra would
print in its output.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def render(template: str, **values) -> str:
    return _env.get_template(template).render(**values)


def render_io(template: str, **values) -> StringIO:
    return StringIO(render(template, **values))

"""Render Jinja2 templates with explicit values.

Every service keeps its templates in its own folder (services/<service>/templates);
`templates(__file__)` gives that service a `render`. Shared templates (systemd units and
timers of the platform's jobs) live in codeb/templates and are found from every service.

Templates are rendered on the control node and uploaded as file objects, so values
(secrets included) never become operation arguments that pyinfra would print.
Templates render configuration only; programs that run on hosts are real files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

SHARED = Path(__file__).resolve().parent / "templates"


@cache
def _env(folder: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([folder, str(SHARED)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def templates(module_file: str):
    """The `render(template, **values)` of the service whose module is `module_file`."""
    folder = str(Path(module_file).resolve().parent / "templates")

    def render(template: str, **values) -> str:
        return _env(folder).get_template(template).render(**values)

    return render


def render_shared(template: str, **values) -> str:
    """A template of codeb/templates (shared by several services)."""
    return _env(str(SHARED)).get_template(template).render(**values)

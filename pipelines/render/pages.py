"""The HTML pages' one Jinja2 environment: the templates of ``pipelines/render/templates/``, autoescaped.

    html = render("report.html.j2", filters={"pct": pct}, rows=...)

Autoescaping is on for every page (values in them are codes, counts and
dates, never identity; escaping keeps a stray ``<`` in an agent id or a
purpose text from becoming markup), and an undefined name is an error, not
an empty cell.
"""

from __future__ import annotations

import functools

__all__ = ["render"]


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.render", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, filters: dict | None = None, **context) -> str:
    env = _environment()
    if filters:
        env = env.overlay()
        env.filters.update(filters)
    return env.get_template(name).render(**context)

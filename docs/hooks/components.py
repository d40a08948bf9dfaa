"""mkdocs hook: the components page from the registries, and the changelog from CHANGELOG.md.

``docs/components.md`` holds the marker ``<!-- registry -->``; at build time it is replaced by
one section per registered backbone, global block, encoder and reference system, with its
summary, its options (key, default, what it must be: the constructor's annotations, the same
schema the config checks) and its presets. ``docs/changelog.md`` holds ``<!-- changelog -->``,
replaced by the repository's ``CHANGELOG.md``.
"""
from __future__ import annotations

import inspect
from pathlib import Path

MARKER = "<!-- registry -->"
CHANGELOG_MARKER = "<!-- changelog -->"
ROOT = Path(__file__).resolve().parents[2]


def _default(value) -> str:
    return "required" if value is inspect.Parameter.empty else f"`{value!r}`"


def component_section(component) -> str:
    """Markdown of one registered component."""
    from mlip_attn.registry import _describe, _type_hints
    lines = [f"### `{component.name}`", "", component.summary + ".", ""]
    doc = inspect.getdoc(component.factory)
    if doc:
        lines += [doc.split("\n\n")[0].replace("\n", " "), ""]
    params = component.parameters()
    if params:
        hints = _type_hints(component.factory)
        lines += ["| option | default | must be |", "|---|---|---|"]
        for name, p in params.items():
            must = _describe(hints[name]) if name in hints else "any value"
            lines.append(f"| `{name}` | {_default(p.default)} | {must} |")
        lines.append("")
    if component.presets:
        lines += ["Presets: " + ", ".join(f"`{k}` = `{v}`" for k, v in component.presets.items()),
                  ""]
    return "\n".join(lines)


def registry_markdown() -> str:
    """Every registry, one section per component, in name order."""
    from mlip_attn.registry import BACKBONES, ENCODERS, GLOBAL_BLOCKS, REFERENCE_SYSTEMS
    parts = []
    for title, registry, where in (
            ("Backbones", BACKBONES, "`model.backbone`"),
            ("Global blocks", GLOBAL_BLOCKS, "`model.attention: {type: ...}`"),
            ("Input encoders", ENCODERS, "`model.encoders`"),
            ("Reference systems", REFERENCE_SYSTEMS, "`mlip-attn data <name>`")):
        parts.append(f"## {title}\n\nChosen with {where}; package `{registry.package}`.\n")
        parts += [component_section(c) for c in sorted(registry, key=lambda c: c.name)]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, registry_markdown())
    if CHANGELOG_MARKER in markdown:
        markdown = markdown.replace(CHANGELOG_MARKER, (ROOT / "CHANGELOG.md").read_text()
                                    .split("\n", 1)[1])
    return markdown

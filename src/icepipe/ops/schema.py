"""``icepipe schema``: the JSON Schema (draft 2020-12) of pipeline and catalog files.

Generated from the field tables the loaders read (:data:`icepipe.spec.PIPELINE`,
:data:`icepipe.catalog.CATALOG`), so that an editor's completion and checks follow the
loader. ``schemas/*.schema.json`` in the repository are this output, kept equal by a test.
An editor with the YAML language server picks the schema up from a first-line comment::

    # yaml-language-server: $schema=../schemas/pipeline.schema.json
"""

from __future__ import annotations

import json
from typing import Any, Literal

from icepipe.catalog import CATALOG
from icepipe.spec import PIPELINE

__all__ = ["SCHEMA_KINDS", "json_schema", "render_schema"]

SchemaKind = Literal["pipeline", "catalog"]
SCHEMA_KINDS: tuple[SchemaKind, ...] = ("pipeline", "catalog")
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(kind: SchemaKind = "pipeline") -> dict[str, Any]:
    """The JSON Schema of a pipeline file or of the repository catalog."""
    fld = PIPELINE if kind == "pipeline" else CATALOG
    body = fld.json_schema()
    return {"$schema": _DRAFT, "title": f"icepipe {kind} file", **body}


def render_schema(kind: SchemaKind = "pipeline") -> str:
    """:func:`json_schema` as the text ``icepipe schema`` prints (and the committed files hold)."""
    return json.dumps(json_schema(kind), indent=2) + "\n"

#!/usr/bin/env python3
"""extract_schemas.py: pins the part of OpenAI's published openapi.yaml that
the daemon's responses must match, as JSON for ajv.

Usage: extract_schemas.py OPENAPI_YAML SOURCE_NOTE > openai-schemas.json

Takes the response schemas below and every schema they reference
(transitively), rewriting `#/components/schemas/X` refs to `#/$defs/X`.
OpenAPI 3.0 `nullable: true` becomes a JSON-schema type union so a
standard validator reads it. Needs PyYAML (run once by a maintainer; the
output is committed)."""
import json
import sys

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "ErrorResponse",
    # /v1/responses: the object, DELETE's answer and the stream events it sends
    "Response",
    "ResponseCreatedEvent",
    "ResponseInProgressEvent",
    "ResponseOutputItemAddedEvent",
    "ResponseContentPartAddedEvent",
    "ResponseTextDeltaEvent",
    "ResponseTextDoneEvent",
    "ResponseContentPartDoneEvent",
    "ResponseOutputItemDoneEvent",
    "ResponseCompletedEvent",
    "ResponseIncompleteEvent",
    "ResponseFailedEvent",
    "ResponseErrorEvent",
]


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    schemas = spec["components"]["schemas"]
    keep, todo = {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]

        def walk(node):
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                    todo.append(ref.rsplit("/", 1)[1])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(schemas[name])

    def convert(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in ("example", "examples", "x-oaiMeta", "x-oaiTypeLabel", "x-stainless-const",
                         "x-oaiExpandable", "deprecated", "discriminator"):
                    continue
                if k == "$ref" and isinstance(v, str):
                    v = v.replace("#/components/schemas/", "#/$defs/")
                out[k] = convert(v)
            if out.pop("nullable", False):
                if "type" in out:
                    t = out["type"]
                    out["type"] = (t if isinstance(t, list) else [t]) + ["null"]
                    if "enum" in out and None not in out["enum"]:
                        out["enum"] = out["enum"] + [None]
                else:
                    out = {"anyOf": [out, {"type": "null"}]}
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    doc = {
        "$comment": "Subset of OpenAI's openapi.yaml (" + sys.argv[2] + "), extracted by "
                    "tests/http/extract_schemas.py. Do not edit by hand.",
        "$defs": {k: convert(v) for k, v in sorted(keep.items())},
    }
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

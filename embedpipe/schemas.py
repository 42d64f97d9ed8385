"""Parquet contracts between stages, declared once and checked on read."""

from __future__ import annotations

import pyarrow as pa

from embedpipe.errors import SchemaError

VOCAB = pa.schema([("id", pa.int32()), ("token", pa.string()), ("count", pa.int64())])
CORPUS = pa.schema([("doc", pa.int64()), ("ids", pa.list_(pa.int32()))])
COOC = pa.schema([("i", pa.int32()), ("j", pa.int32()), ("x", pa.float32())])
VECTORS = pa.schema(
    [("id", pa.int32()), ("token", pa.string()), ("vector", pa.list_(pa.float32()))]
)

#: The same contracts as Spark DDL strings (for mapInArrow output schemas).
CORPUS_DDL = "doc long, ids array<int>"
COOC_DDL = "i int, j int, x float"


def check(schema: pa.Schema, expected: pa.Schema, where: str) -> None:
    """Raise SchemaError naming ``where`` unless ``schema`` has the expected columns and types.

    Extra columns are allowed (a newer writer may add some); missing or retyped ones are not.
    """
    for f in expected:
        idx = schema.get_field_index(f.name)
        if idx < 0:
            raise SchemaError(
                f"{where}: missing column '{f.name}' (expected {expected.names}); "
                "was it written by embedpipe?"
            )
        got = schema.field(idx).type
        same = got == f.type or (
            pa.types.is_list(got)
            and pa.types.is_list(f.type)
            and got.value_type == f.type.value_type
        )
        if not same:
            raise SchemaError(f"{where}: column '{f.name}' has type {got}, expected {f.type}")

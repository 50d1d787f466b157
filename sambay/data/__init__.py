"""Data pipeline: corpus -> token shards, and shard loaders (tokenizers live in `sambay.tokenizer`).

Modules: ``sources`` (input files -> documents), ``shards`` (binary shard format), ``prepare``
(resumable tokenization job), ``dataset`` (a shard directory as one token stream), ``loader``
(training/validation batches; needs torch).

Names are imported lazily so that ``sambay data prepare`` does not pay for importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "DataError": "sources", "expand_inputs": "sources", "iter_documents": "sources",
    "ShardError": "shards", "read_shard": "shards", "write_shard": "shards", "read_header": "shards",
    "PrepareConfig": "prepare",  # the function is sambay.data.prepare.prepare (name = module)
    "TokenStream": "dataset",
    "TokenLoader": "loader", "ValidationLoader": "loader", "document_ids": "loader", "MissingEOSError": "loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

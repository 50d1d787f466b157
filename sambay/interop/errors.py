"""Exceptions raised by the checkpoint / tokenizer interop layer.

Every problem with files on disk becomes a :class:`CheckpointError` whose message names the file and says
what is wrong with it (and, where there is one, what to do about it). They subclass :class:`ValueError`
so that callers that already catch "bad input" keep working, and so that a test can match on either.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "TokenizerError", "ChatTemplateError"]


class CheckpointError(ValueError):
    """A checkpoint folder or file is missing, malformed, or does not match what the caller expects.

    The message is meant for a human: one readable paragraph per problem, file names included.
    """


class TokenizerError(CheckpointError):
    """The tokenizer files of a checkpoint are missing, malformed or inconsistent with each other.

    A subclass of :class:`CheckpointError` because tokenizer files are part of a checkpoint folder:
    ``except CheckpointError`` catches both.
    """


class ChatTemplateError(ValueError):
    """Rendering a chat template failed.

    Either the template itself called ``raise_exception(...)`` (e.g. "roles must alternate") — which is a
    problem with the *messages* passed in, not with the files — or the template hit an error at run time.
    Syntax errors in a template found while loading are a :class:`TokenizerError` instead, because they
    are a problem with the files.
    """

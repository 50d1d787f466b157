"""Chat templates: the Jinja templates a checkpoint ships with its tokenizer, rendered in a sandbox.

Templates are rendered with ``jinja2.sandbox.ImmutableSandboxedEnvironment`` configured like Hugging Face
(``trim_blocks``, ``lstrip_blocks``, loop controls, a non-HTML-escaping ``tojson``, ``raise_exception``,
``strftime_now``, a pass-through ``{% generation %}`` block), because templates come from downloaded files
and must not be able to touch Python objects. There is deliberately no built-in fallback template:
guessing a chat format silently degrades a model, so a missing template is an error.

A template is also bounded in what it can make the machine do: `*`, `+` and `**` are checked before they run
(no string or list over MAX_VALUE_LEN items, no power of more than MAX_POWER_BITS bits), and one render may
iterate at most MAX_RANGE_TOTAL `range` items in all. Jinja would otherwise fold `{{ 'a' * 10**10 }}` while
compiling, allocating gigabytes as the tokenizer loads, and nested `range` loops would never end.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sambay.interop.errors import ChatTemplateError, TokenizerError
from sambay.tokenizer.files import CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE

__all__ = ["ChatTemplates"]

MAX_VALUE_LEN = 1 << 20  # characters or items a `*` or `+` may produce
MAX_POWER_BITS = 1 << 12  # bits of an integer a `**` may produce
MAX_RANGE_TOTAL = 1 << 20  # `range` items one render may iterate, all loops together
MAX_OUTPUT_LEN = 1 << 24  # characters one render may produce
MAX_RENDER_SECONDS = 5.0  # checked each time the template emits text
_range_left: contextvars.ContextVar[int] = contextvars.ContextVar("range_left", default=MAX_RANGE_TOTAL)


class _TemplateRaised(ChatTemplateError):
    """Raised by ``raise_exception`` inside a template; re-raised with context by ChatTemplates.render."""


def _raise_exception(message: Any) -> None:
    raise _TemplateRaised(str(message))


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # jinja2's built-in tojson HTML-escapes <, >, & and ' — wrong for prompts. Same signature as HF's.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _too_big(message: str):
    from jinja2.sandbox import SecurityError

    return SecurityError(f"{message}: a chat template may not build values that large")


def _bounded_range(*args: int) -> range:
    r = range(*args)
    left = _range_left.get() - len(r)
    if left < 0:
        raise _too_big(f"range loops over more than {MAX_RANGE_TOTAL:,} items in all")
    _range_left.set(left)
    return r


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse a `*`, `+` or `**` whose result would be huge, before computing it."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_VALUE_LEN:
                raise _too_big(f"a repetition of {len(seq):,} x {n:,} items")
    elif operator == "+":
        if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) and \
                len(left) + len(right) > MAX_VALUE_LEN:
            raise _too_big(f"a concatenation of {len(left) + len(right):,} items")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and \
            max(abs(left).bit_length(), 1) * right > MAX_POWER_BITS:
        raise _too_big(f"a power {left} ** {right}")


def _bounded_render(template: Any, context: dict[str, Any]) -> str:
    """Render piece by piece, stopping a template whose output or time runs past the bounds."""
    import time

    deadline = time.monotonic() + MAX_RENDER_SECONDS
    pieces, size = [], 0
    for piece in template.generate(**context):
        size += len(piece)
        if size > MAX_OUTPUT_LEN:
            raise _too_big(f"a rendered prompt of more than {MAX_OUTPUT_LEN:,} characters")
        if time.monotonic() > deadline:
            raise _too_big(f"a render of more than {MAX_RENDER_SECONDS:g} s")
        pieces.append(piece)
    return "".join(pieces)


def _make_environment() -> Any:
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        # intercepted operators are never folded at compile time: they run through call_binop at render time
        intercepted_binops = frozenset({"*", "+", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body unchanged.

        HF uses this block to compute assistant-token masks for training; some templates contain it, so
        it must parse. We do not compute masks.
        """

        tags = {"generation"}

        def parse(self, parser: Any) -> list[nodes.Node]:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, "jinja2.ext.loopcontrols"]
    )
    env.globals["range"] = _bounded_range
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplates:
    """A tokenizer's chat templates by name (one unnamed template is called ``"default"``).

    Every template is compiled here, so a syntax error is a :class:`TokenizerError` at load time naming
    ``source`` (the file the templates came from) and the template line. ``folder`` is the tokenizer
    folder, for messages. jinja2 is imported only when there is a template to compile.
    """

    def __init__(self, templates: Mapping[str, str], source: str = "<string>", folder: Path | None = None):
        self.sources = dict(templates)
        self.source = source
        self.folder = folder
        self._env: Any = None
        self._compiled: dict[str, Any] = {}
        for name, text in self.sources.items():
            self._compiled[name] = self._compile(text, f"{source} (template {name!r})"
                                                 if len(self.sources) > 1 else source)

    def _compile(self, text: str, where: str) -> Any:
        from jinja2 import TemplateSyntaxError

        if self._env is None:
            self._env = _make_environment()
        try:
            return self._env.from_string(text)
        except TemplateSyntaxError as e:
            raise TokenizerError(
                f"chat template in {where} has a syntax error at template line {e.lineno}: {e.message}"
            ) from None

    @property
    def default(self) -> str | None:
        """Source of the default template, or None."""
        if not self.sources:
            return None
        return self.sources.get("default", next(iter(self.sources.values())))

    def _select(self, chat_template: str | None, tools: Any) -> tuple[Any, str]:
        if chat_template is not None:
            if chat_template in self._compiled:  # a name of one of the checkpoint's templates
                return self._compiled[chat_template], f"template {chat_template!r}"
            return self._compile(chat_template, "the chat_template argument"), "the chat_template argument"
        if not self._compiled:
            raise ChatTemplateError(
                f"the tokenizer in {self.folder} has no chat template (no 'chat_template' in "
                f"{TOKENIZER_CONFIG_FILE} and no {CHAT_TEMPLATE_FILE}); pass chat_template=... to "
                "apply_chat_template() or to load_tokenizer(). sambay does not guess chat formats."
            )
        if len(self._compiled) == 1:
            return next(iter(self._compiled.values())), self.source
        if tools is not None and "tool_use" in self._compiled:
            return self._compiled["tool_use"], f"template 'tool_use' in {self.source}"
        if "default" in self._compiled:
            return self._compiled["default"], f"template 'default' in {self.source}"
        raise ChatTemplateError(
            f"{self.source} has several named chat templates "
            f"({', '.join(self._compiled)}) and none is called 'default'; pass chat_template=<name>"
        )

    def render(self, messages: Sequence[Mapping[str, Any]], variables: Mapping[str, Any], *,
               add_generation_prompt: bool, tools: Any, documents: Any, chat_template: str | None) -> str:
        """Render ``messages`` with the selected template; ``variables`` (the special tokens and the
        caller's extra keyword arguments) are visible to the template and override the rest.

        ``chat_template`` is the name of one of the templates or a template source string. With several
        templates and ``tools``, ``"tool_use"`` is preferred. A template's ``raise_exception(...)`` and
        run-time errors become :class:`ChatTemplateError`.
        """
        from jinja2 import TemplateError

        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not all(
            isinstance(m, Mapping) for m in messages
        ):
            raise ChatTemplateError(
                "messages must be a list of dicts like {'role': 'user', 'content': 'Hello'}, "
                f"got {type(messages).__name__}"
            )
        template, where = self._select(chat_template, tools)
        context: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
            "documents": documents,
        }
        context.update(variables)
        budget = _range_left.set(MAX_RANGE_TOTAL)
        try:
            return _bounded_render(template, context)
        except _TemplateRaised as e:
            raise ChatTemplateError(f"the chat template rejected the messages: {e}") from None
        except (TemplateError, TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError) as e:
            raise ChatTemplateError(
                f"error while rendering the chat template ({where}): {type(e).__name__}: {e}"
            ) from e
        finally:
            _range_left.reset(budget)

"""Chat templates: the Jinja templates a checkpoint ships with its tokenizer, rendered in a sandbox.

Templates are rendered with ``jinja2.sandbox.ImmutableSandboxedEnvironment`` configured like Hugging Face
(``trim_blocks``, ``lstrip_blocks``, loop controls, a non-HTML-escaping ``tojson``, ``raise_exception``,
``strftime_now``, a pass-through ``{% generation %}`` block), because templates come from downloaded files
and must not be able to touch Python objects. There is deliberately no built-in fallback template:
guessing a chat format silently degrades a model, so a missing template is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sambay.interop.errors import ChatTemplateError, TokenizerError
from sambay.tokenizer.files import CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE

__all__ = ["ChatTemplates"]


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


def _make_environment() -> Any:
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body unchanged.

        HF uses this block to compute assistant-token masks for training; some templates contain it, so
        it must parse. We do not compute masks.
        """

        tags = {"generation"}

        def parse(self, parser: Any) -> list[nodes.Node]:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, "jinja2.ext.loopcontrols"]
    )
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
        try:
            return template.render(**context)
        except _TemplateRaised as e:
            raise ChatTemplateError(f"the chat template rejected the messages: {e}") from None
        except (TemplateError, TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
            raise ChatTemplateError(
                f"error while rendering the chat template ({where}): {type(e).__name__}: {e}"
            ) from e

"""Per-mixer parameter names in foreign checkpoint formats: each mixer class lists its renames
(`Mixer.checkpoint_names[format]`, pairs of (sambay prefix under `mixer.`, the format's prefix under the
layer)); this module applies them in either direction."""

from __future__ import annotations

from sambay.plan import parse


def rename_mixer_param(kind: str, name: str, fmt: str, to_format: bool) -> str | None:
    """A mixer parameter name of a layer of `kind`: sambay's (below `mixer.`) -> `fmt`'s (below the layer
    prefix) with `to_format`, else the inverse. None when the mixer has no such name in `fmt`."""
    for ours, theirs in parse(kind).mixer_class.checkpoint_names.get(fmt, ()):
        src, dst = (ours, theirs) if to_format else (theirs, ours)
        if name.startswith(src):
            return dst + name[len(src):]
    return None

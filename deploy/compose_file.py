"""Read Compose files as Docker Compose does (the subset used here): `!reset`/`!override`, merge, `${VAR:-x}`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml


class Reset:
    """`!reset`: remove the key from the merged result."""


class Override:
    """`!override value`: replace the base value instead of merging with it."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _loader(keep_tags: bool) -> type[yaml.SafeLoader]:
    class ComposeLoader(yaml.SafeLoader):
        pass

    def reset(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if keep_tags:
            return Reset()
        return _construct(loader, node)

    def override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        value = _construct(loader, node)
        return Override(value) if keep_tags else value

    ComposeLoader.add_constructor("!reset", reset)
    ComposeLoader.add_constructor("!override", override)
    return ComposeLoader


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.ScalarNode)
    value = loader.construct_scalar(node)
    return None if value == "" else value


def load_compose(path: Path, *, keep_tags: bool = True) -> dict[str, Any]:
    """The YAML document; with `keep_tags`, `!reset`/`!override` become markers for `merge_compose`."""
    document = yaml.load(path.read_text(), Loader=_loader(keep_tags))
    assert isinstance(document, dict)
    return document


# Compose replaces these sequences when overriding; every other sequence is appended (ports, volumes...).
_REPLACED = {"command", "entrypoint", "test"}


def merge_compose(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge of an override file onto a base file (the subset these files use)."""
    if isinstance(override, Override):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            if isinstance(v, Reset):
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge_compose(merged[k], v, k)
            else:
                merged[k] = merge_compose(None, v, k)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED:
        return base + [item for item in override if item not in base]
    if isinstance(override, dict):
        return {k: merge_compose(None, v, k) for k, v in override.items() if not isinstance(v, Reset)}
    return override


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """`${VAR}`, `${VAR:-default}` and `$$` as Compose interpolates them, from `env` (default: os.environ)."""
    environ = dict(os.environ) if env is None else env
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return environ.get(match.group(1)) or (match.group(2) or "")

    return _VARIABLE.sub(replace, value)

"""Config files: dataclasses filled from dicts, TOML files and dotted command-line overrides.

    cfg = load_config(FinetuneConfig, "run.toml", ["--train.lr=3e-5", "--data.max_length=64"])

Every key is checked against the dataclass fields (an unknown key is an error that names it
and suggests the closest one), and every value against the field's type (``train.lr`` must
be a number), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path


class ConfigError(ValueError):
    """A config key does not exist or a value has the wrong type."""


def _field_types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value, typ, key: str):
    """Convert ``value`` (possibly a string from the command line) to ``typ`` or raise."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        options = [t for t in typing.get_args(typ) if t is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        errors = []
        for t in options:
            try:
                return _coerce(value, t, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    if origin in (list, tuple) or typ in (list, tuple):
        origin = origin or typ
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        args = [t for t in typing.get_args(typ) if t is not Ellipsis]
        if args:  # typed elements: tuple[float, float], list[str] …
            if origin is tuple and Ellipsis not in typing.get_args(typ) and len(args) != len(value):
                raise ConfigError(f"config key {key!r} needs {len(args)} values, got {len(value)}: {value!r}")
            value = [_coerce(v, args[min(i, len(args) - 1)], key) for i, v in enumerate(value)]
        return list(value) if origin is list else tuple(value)
    return value


def _section_type(typ):
    """The dataclass of a section field (``Section`` or ``Section | None``), else ``typ``."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        classes = [t for t in typing.get_args(typ) if dataclasses.is_dataclass(t)]
        if len(classes) == 1:
            return classes[0]
    return typ


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a (nested) dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '(top)'} must be a table, got {data!r}")
    fields = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        full = prefix + key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}; known: {', '.join(prefix + f for f in fields)}")
        typ = _section_type(fields[key])
        if dataclasses.is_dataclass(typ) and not (value is None and typ is not fields[key]):
            kwargs[key] = from_dict(typ, value, full + ".")
        else:
            kwargs[key] = _coerce(value, typ, full)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(cfg) -> dict:
    """A dataclass config as a plain nested dict."""
    return dataclasses.asdict(cfg)


def parse_overrides(args) -> dict:
    """``["--train.lr=3e-5", "--data.task", "sst2"]`` → ``{"train": {"lr": "3e-5"}, "data": {...}}``."""
    out: dict = {}
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected an override like --section.key=value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg!r} has no value")
            key, value = body, args[i + 1]
            i += 1
        node = out
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {arg!r} conflicts with another override")
        node[parts[-1]] = value
        i += 1
    return out


def merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, tables merged key by key (neither is changed)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls, path=None, overrides=(), base: dict | None = None):
    """Defaults of ``cls``, updated by ``base`` (a named recipe's table), then by a TOML file,
    then by dotted command-line overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    data = merge(merge(base or {}, data), parse_overrides(overrides))
    return from_dict(cls, data)


# ---------------------------------------------------------------- help
def _comments(cls) -> dict:
    """``{field: help}`` of a dataclass, from the trailing comment on each field's line, else from
    the ``Args:`` section of its docstring (``name: text``)."""
    import inspect
    import io
    import tokenize

    out: dict = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # made at run time: no source
        source = ""
    pending = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and pending is None:
            pending = (tok.string, tok.start[0])
        elif tok.type == tokenize.COMMENT and pending and tok.start[0] == pending[1]:
            out.setdefault(pending[0], tok.string.lstrip("# ").strip())
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            pending = None
    doc = inspect.getdoc(cls) or ""
    if "Args:" in doc:
        current = None
        for line in doc.split("Args:", 1)[1].splitlines():
            head, sep, text = line.strip().partition(": ")
            if sep and line.startswith("    ") and not line.startswith("        ") and head.isidentifier():
                current = head
                out.setdefault(current, text.strip())
            elif current and line.startswith("        "):
                if current in out and out[current] is not None:
                    out[current] += " " + line.strip()
    return out


def _type_name(typ) -> str:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(t) for t in typing.get_args(typ) if t is not type(None)) + " | none"
    return getattr(typ, "__name__", str(typ))


def describe(cls, prefix: str = "", default=None) -> list[dict]:
    """Every key of config dataclass ``cls``: ``{"key", "type", "default", "help", "section"}``,
    sections (nested dataclasses) first named by a row of their own, generated from the class
    itself so the listing cannot drift from what the loader accepts."""
    rows = []
    obj = default if default is not None else cls()
    hints, notes = _field_types(cls), {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            notes.update(_comments(klass))
    scalars, sections = [], []
    for f in dataclasses.fields(cls):
        typ, key, value = hints[f.name], prefix + f.name, getattr(obj, f.name)
        section = _section_type(typ)
        if dataclasses.is_dataclass(section):
            doc = " ".join((section.__doc__ or "").strip().split("\n\n")[0].split())
            off = " (off until one of its keys is given)" if value is None else ""
            sections.append({"key": key, "section": True, "type": section.__name__, "default": None,
                             "help": (notes.get(f.name) or doc) + off})
            sections += describe(section, key + ".", value if value is not None else section())
        else:
            scalars.append({"key": key, "section": False, "type": _type_name(typ), "default": value,
                            "help": notes.get(f.name, "")})
    return rows + scalars + sections


def help_text(cls) -> str:
    """:func:`describe` as text for a terminal: one line per key, sections as headings."""
    lines = []
    for r in describe(cls):
        if r["section"]:
            lines.append(f"\n[{r['key']}]  {r['help']}")
        else:
            default = "none" if r["default"] is None else repr(r["default"])
            lines.append(f"  --{r['key']}={default}  ({r['type']})  {r['help']}".rstrip())
    return "\n".join(lines).lstrip("\n")


def help_markdown(cls, title: str) -> str:
    """:func:`describe` as a Markdown table for the docs."""
    out = [f"## {title}", "", "| key | default | meaning |", "| --- | --- | --- |"]
    for r in describe(cls):
        if r["section"]:
            out.append(f"| **`{r['key']}`** | | {r['help']} |")
        else:
            default = "none" if r["default"] is None else repr(r["default"])
            out.append(f"| `{r['key']}` | `{default}` | {r['help'].replace('|', '/')} |")
    return "\n".join(out) + "\n"

"""``models:/`` URIs of the MLflow Model Registry, taken apart and put together in one place.

``models:/NAME@ALIAS`` names what an alias points at, ``models:/NAME/VERSION`` one version (a number, or
``latest``). ``radpipe deploy`` and ``radpipe run``'s summary read them, serving resolves them to the version
it loads; every one of them parses with :meth:`ModelUri.parse`, so they cannot disagree about a name.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "models:/"


def is_model_uri(text: str) -> bool:
    """Whether ``text`` is a ``models:/`` URI (and not a folder, ``runs:/`` or ``s3://`` location)."""
    return text.startswith(PREFIX)


def version_uri(name: str, version: str) -> str:
    """``models:/NAME/VERSION``: one version, whatever its aliases do later."""
    return f"{PREFIX}{name}/{version}"


def alias_uri(name: str, alias: str) -> str:
    """``models:/NAME@ALIAS``: whichever version ``alias`` points at when it is read."""
    return f"{PREFIX}{name}@{alias}"


@dataclass(frozen=True)
class ModelUri:
    """The parts of ``[models:/]NAME[@ALIAS][/VERSION]``; a part that is absent is None (not ``""``)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelUri:
        """Split without judging: callers decide which combinations they accept (see :attr:`is_alias`)."""
        head, slash, version = text.removeprefix(PREFIX).partition("/")
        name, at, alias = head.partition("@")
        return cls(name, alias if at else None, version if slash else None)

    @property
    def is_alias(self) -> bool:
        """``NAME@ALIAS`` and nothing after it."""
        return bool(self.name and self.alias and self.version is None)

    @property
    def is_version(self) -> bool:
        """``NAME/N`` with a version number."""
        return bool(self.name and self.alias is None and self.version and self.version.isdigit())

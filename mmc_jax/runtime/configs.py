"""Typed configs: frozen dataclasses whose fields declare their own bounds, built one way.

Every config of the library (:class:`mmc_jax.training.TrainConfig` and its sections,
:class:`mmc_jax.finetune.FinetuneConfig`, :class:`mmc_jax.connectivity.CurveConfig`) is a
:class:`Config`. A config reaches the library in one way: ``SomeConfig.of(mapping)``, from an
``ml_collections.ConfigDict`` section or a stored JSON dict, which names unknown fields and
builds nested sections; the dataclass itself checks every field against the bounds or choices
its :func:`field` declares, so a config cannot exist with an impossible value. The command
line (``experiments/fields.py``) reads the same declarations to check a whole config before any
work, with each field's full dotted name.

>>> @dataclasses.dataclass(frozen=True)
... class Optim(Config):
...     epochs: int = field(12, bounds="count")
...     schedule: str = field("cosine", choices=("constant", "cosine"))
>>> Optim.of({"epochs": 3}).schedule
'cosine'
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar, Mapping, Sequence

from mmc_jax.runtime.errors import InputError, check_bounds, check_choice


def field(default: Any, *, bounds: str = "", choices: Sequence = (), label: str = "") -> Any:
    """A config field with its default and what it accepts.

    Args:
      default: the default value (a :class:`Config` for a nested section).
      bounds: a kind of :data:`mmc_jax.runtime.errors.BOUNDS` (``count``, ``positive``,
        ``non_negative``, ``fraction``, ``momentum``, ``points``) for a number.
      choices: the values a choice field accepts.
      label: the name of a choice in messages (default: the field's name).
    """
    metadata = {"bounds": bounds, "choices": tuple(choices), "label": label}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of the library's typed configs: strict construction from mappings, bound checks
    from the fields' declarations, a nested plain dict for storage, copies with changes."""

    #: The section's name in messages (``"optim."``: ``optim.epochs must be >= 1``).
    prefix: ClassVar[str] = ""
    #: What the config is, in messages about unknown fields (default: the prefix).
    kind: ClassVar[str] = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("bounds"):
                if f.type == "int" and not isinstance(value, numbers.Integral):
                    raise InputError(f"{self.prefix}{f.name} must be an integer, got {value!r}")
                check_bounds(self, self.prefix, **{f.metadata["bounds"]: (f.name,)})
            if f.metadata.get("choices"):
                check_choice(f.metadata["label"] or f.name, value, f.metadata["choices"])

    @classmethod
    def of(cls, values: Any = None, **changes) -> "Config":
        """The config of a mapping (a ConfigDict, a nested dict), itself, or None (the
        defaults), with ``changes`` applied (a nested section takes a dict of its fields).

        Raises:
          InputError: an unknown field (named, with the section's fields), or a value out of
            its field's bounds.
        """
        if isinstance(values, cls):
            return values.changed(**changes) if changes else values
        values = {} if values is None else cls.upgraded(_plain(values))
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            kind = cls.kind or cls.prefix.rstrip(".")
            where = f"{kind} " if kind else ""
            raise InputError(
                f"unknown {where}config field(s) {', '.join(unknown)}; choose from "
                f"{', '.join(sorted(names))}"
            )
        kwargs = {}
        for f in dataclasses.fields(cls):
            section = _section_type(f)
            if section is not None:
                kwargs[f.name] = section.of(values.get(f.name, f.default))
            elif f.name in values:
                kwargs[f.name] = values[f.name]
        return cls(**kwargs).changed(**changes) if changes else cls(**kwargs)

    @classmethod
    def upgraded(cls, values: dict) -> dict:
        """``values`` as this config's fields today (a config whose stored form changed
        overrides this to read the old form)."""
        return values

    def to_dict(self) -> dict:
        """Nested plain dict (``config.json``, and a ConfigDict's ``update``)."""
        return dataclasses.asdict(self)

    def changed(self, **changes) -> "Config":
        """A copy with some fields changed; a nested section takes a dict of its own fields.

        >>> config.changed(seed=1, data={"cue_proportion": 0.0})
        """
        for f in dataclasses.fields(self):
            if f.name in changes and isinstance(changes[f.name], Mapping):
                section = getattr(self, f.name)
                if isinstance(section, Config):
                    changes[f.name] = section.changed(**changes[f.name])
        return dataclasses.replace(self, **changes)


def sections(cls: type) -> dict[str, type]:
    """The nested :class:`Config` sections of ``cls``, by field name."""
    found = {f.name: _section_type(f) for f in dataclasses.fields(cls)}
    return {name: section for name, section in found.items() if section is not None}


def _section_type(f: dataclasses.Field):
    """The Config class of a nested section field (known by its default), else None."""
    return type(f.default) if isinstance(f.default, Config) else None


def _plain(values: Any) -> dict:
    """A ConfigDict or mapping as a plain dict (nested sections stay mappings)."""
    return values.to_dict() if hasattr(values, "to_dict") else dict(values)

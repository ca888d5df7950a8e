"""Dataset registry: ``build_dataset(spec)`` and ``build_mixture([spec, ...])`` from plain dicts (YAML).

A spec is ``{"name": NAME, **keys}``; each dataset's keys are its ``Spec`` dataclass fields, checked
strictly (an unknown key or a wrong type is a ConfigError naming it). A mixture spec may carry
``repeat: N`` (an integer >= 1), the number of times the dataset appears in the concatenation.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from typing import Any

from madis_stereo.data.base import Sample, sample_at
from madis_stereo.data.benchmarks import ETH3D, Kitti2012, Kitti2015, Middlebury, SceneFlow
from madis_stereo.data.folder import FolderStereo
from madis_stereo.data.synthetic import SyntheticStereo
from madis_stereo.errors import ConfigError
from madis_stereo.utils.config import from_dict

__all__ = ["DATASETS", "MixtureDataset", "build_dataset", "build_mixture", "dataset_keys"]

DATASETS: dict[str, Any] = {
    "sceneflow": SceneFlow,
    "kitti2012": Kitti2012,
    "kitti2015": Kitti2015,
    "eth3d": ETH3D,
    "middlebury": Middlebury,
    "folder": FolderStereo,
    "synthetic": SyntheticStereo,
}


def dataset_keys(name: str) -> list[str]:
    """The spec keys a dataset accepts (besides ``name``)."""
    spec_cls = DATASETS[name].Spec
    aliases = {v: k for k, v in getattr(spec_cls, "KEY_ALIASES", {}).items()}
    return [aliases.get(f.name, f.name) for f in dataclasses.fields(spec_cls)]


def build_dataset(spec: dict[str, Any]) -> Any:
    """Build one dataset from ``{"name": ..., "root": ..., ...}`` (see DATASETS for the names)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"dataset spec must be a mapping, got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in DATASETS:
        what = f"unknown dataset '{name}'" if name is not None else "dataset spec has no 'name'"
        raise ConfigError(f"{what}; choose from {', '.join(DATASETS)}")
    cls = DATASETS[name]
    spec_cls = cls.Spec
    for key, field_name in getattr(spec_cls, "KEY_ALIASES", {}).items():
        if field_name in spec:  # only the YAML spelling is a key
            raise ConfigError(f"dataset '{name}': unknown config key(s) '{field_name}'; valid keys: "
                              f"{', '.join(sorted(dataset_keys(name)))}")
        if key in spec:
            spec[field_name] = spec.pop(key)
    required = [f.name for f in dataclasses.fields(spec_cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [key for key in required if key not in spec]
    if missing:
        raise ConfigError(f"dataset '{name}': missing required key(s) {', '.join(missing)}")
    try:
        parsed = from_dict(spec_cls, spec)
    except ConfigError as err:
        message = str(err)
        for key, field_name in getattr(spec_cls, "KEY_ALIASES", {}).items():
            message = message.replace(field_name, key)
        raise ConfigError(f"dataset '{name}': {message}") from None
    return cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)})


class MixtureDataset:
    """The concatenation of datasets, each repeated ``repeat`` times (index ``i`` of repeat ``r`` of a
    part maps to its sample ``i``; datasets with ``get(i, epoch)`` see fresh samples per repeat)."""

    title = "mixture"

    def __init__(self, parts: Sequence[tuple[Any, int]]) -> None:
        if not parts:
            raise ConfigError("a dataset mixture needs at least one dataset")
        self.parts = [(dataset, int(repeat)) for dataset, repeat in parts]
        self._ends: list[int] = []
        total = 0
        for dataset, repeat in self.parts:
            total += len(dataset) * repeat
            self._ends.append(total)

    def __len__(self) -> int:
        return self._ends[-1]

    def _locate(self, index: int) -> tuple[Any, int, int, int]:
        """(dataset, index inside it, which repeat, how many repeats) of mixture index ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a mixture of {len(self)} samples")
        index %= len(self)
        part = bisect.bisect_right(self._ends, index)
        offset = index - (self._ends[part - 1] if part else 0)
        dataset, repeat = self.parts[part]
        return dataset, offset % len(dataset), offset // len(dataset), repeat

    def __getitem__(self, index: int) -> Sample:
        dataset, inner, _, _ = self._locate(index)
        return dataset[inner]

    def get(self, index: int, epoch: int = 0) -> Sample:
        """Sample ``index`` in training epoch ``epoch`` (repeat r of epoch e is the part's epoch e*N+r)."""
        dataset, inner, rep, repeat = self._locate(index)
        return sample_at(dataset, inner, epoch * repeat + rep)

    def describe(self) -> str:
        lines = [f"mixture of {len(self.parts)} dataset(s), {len(self)} samples per epoch:"]
        for dataset, repeat in self.parts:
            text = dataset.describe() if hasattr(dataset, "describe") else repr(dataset)
            first, *rest = text.splitlines()
            lines.append(f"  {repeat} x {first}")
            lines += [f"    {line.strip()}" for line in rest]
        return "\n".join(lines)


def build_mixture(specs: Sequence[dict[str, Any]]) -> MixtureDataset:
    """Build a concatenation from a list of dataset specs, each optionally with ``repeat: N``."""
    if isinstance(specs, dict) or not isinstance(specs, (list, tuple)):
        raise ConfigError(f"a dataset mixture is a list of dataset specs, got {type(specs).__name__}")
    parts = []
    for number, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise ConfigError(f"mixture entry {number}: expected a mapping, got {spec!r}")
        spec = dict(spec)
        repeat = spec.pop("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"mixture entry {number} ({spec.get('name')}): repeat must be an integer >= 1, "
                              f"got {repeat!r}")
        parts.append((build_dataset(spec), repeat))
    return MixtureDataset(parts)


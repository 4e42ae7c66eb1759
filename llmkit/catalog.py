"""Model, quantization, GPU and instance catalogs, loaded from the reviewed data files.

The YAML files in ``llmkit/data`` are the only source of these numbers; everything else
(sizing, config validation, components, playbooks, policies, docs) imports them from here.

The records are frozen, and checked field by field when they are built: a key the
schema does not know, a missing key, a value of the wrong type, out of bounds or not matching
its pattern, and the cross checks between fields all raise :class:`CatalogError`, which names
the file, the key, the value and what is accepted. (They were pydantic models; building those
classes took most of ``llmkit size``'s start-up, for ten small records.)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import yaml

from llmkit.errors import ConfigError, quoted

if TYPE_CHECKING:
    from typing import dataclass_transform
else:
    # The hosts' Python 3.10 (Ubuntu 22.04) has no typing.dataclass_transform, which only
    # informs type checkers: there it is a no-op.
    def dataclass_transform(**_: Any) -> Any:
        return lambda cls: cls


#: The runtime a model is served with when config or the command line names none.
DEFAULT_RUNTIME = "ollama"

#: The data files (os.path: pathlib, with the urllib and ipaddress it imports, is 4 ms of `llmkit size`).
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


class CatalogError(Exception):
    """A catalog data file that breaks the catalog's schema: a bad edit of reviewed data.

    Not a :class:`~llmkit.errors.ConfigError` (nothing a user typed is wrong) and not a
    ``ValueError`` (a pydantic validator of the stack config would report it as a problem of
    the stack's key): it stops whatever loaded the catalog, naming what to fix.
    """

    def __init__(self, key: str, value: Any, accepted: str, problem: str, file: str = "") -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        self.problem = problem
        self.file = file
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.problem} (got {quoted(self.value)}; accepted: {self.accepted})"

    def at(self, key: str, file: str = "") -> CatalogError:
        """The same error for the value under ``key`` (a field or an entry that holds this one)."""
        inner = self.key if not self.key or self.key.startswith("[") else f".{self.key}"
        return CatalogError(f"{key}{inner}", self.value, self.accepted, self.problem, file or self.file)


class _Absent:
    def __repr__(self) -> str:
        return "nothing"


_ABSENT = _Absent()

# --- the checks of a field: each returns the value (a list as a tuple, an integer as a float
# where a float is asked for) or raises CatalogError with the key relative to the field ------------

Check = Callable[[Any], Any]


def _fail(value: Any, accepted: str, problem: str | None = None) -> CatalogError:
    return CatalogError("", value, accepted, problem or f"not {accepted}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(value, "a string")
    return value


def _pattern(regex: str, accepted: str) -> Check:
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise _fail(value, accepted)
        return value

    return check


def _integer(*, gt: int | None = None, ge: int | None = None) -> Check:
    accepted = "an integer" + (f" > {gt}" if gt is not None else "") + (f" >= {ge}" if ge is not None else "")

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(value, accepted)
        if (gt is not None and value <= gt) or (ge is not None and value < ge):
            raise _fail(value, accepted)
        return value

    return check


_positive = _integer(gt=0)


def _number(*, gt: float | None = None) -> Check:
    accepted = "a number" + (f" > {gt:g}" if gt is not None else "")

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _fail(value, accepted)
        if gt is not None and value <= gt:
            raise _fail(value, accepted)
        return float(value)

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(value, "true or false")
    return value


def _one_of(*choices: str) -> Check:
    accepted = "one of: " + ", ".join(choices)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _fail(value, accepted)
        return value

    return check


def _optional(inner: Check) -> Check:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _tuple_of(item: Check) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _fail(value, "a list")
        items = []
        for i, entry in enumerate(value):
            try:
                items.append(item(entry))
            except CatalogError as exc:
                raise exc.at(f"[{i}]") from None
        return tuple(items)

    return check


def _mapping_of(item: Check) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _fail(value, "a mapping")
        items = {}
        for key, entry in value.items():
            if not isinstance(key, str):
                raise _fail(key, "a string key", "a key that is not a string")
            try:
                items[key] = item(entry)
            except CatalogError as exc:
                raise exc.at(key) from None
        return items

    return check


R = TypeVar("R", bound="_Record")


def _record(cls: type[R]) -> Check:
    def check(value: Any) -> R:
        return value if isinstance(value, cls) else cls.from_data(value)

    return check


class _Field:
    """A field of a record: its check, and its default when a data file may leave it out."""

    __slots__ = ("check", "default", "name")

    def __init__(self, check: Check, default: Any) -> None:
        self.check = check
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


def _field(check: Check, *, default: Any = _ABSENT) -> Any:
    """Declare a record's field: ``name: int = _field(_positive)`` (see :class:`_Record`)."""
    return _Field(check, default)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(_field,))
class _Record:
    """A frozen record whose fields are checked when it is built, as a frozen dataclass with
    ``__post_init__`` checks would be; ``mypy`` sees each record as such a dataclass.

    Not ``@dataclass`` itself: dataclasses write and compile five or six methods per class at
    import, 9 ms for the catalog's eleven records, 7% of ``llmkit size``. Here
    the methods are written once, for every record; each record lists its fields (in order) as
    ``name: type = _field(check[, default=...])``.
    """

    _fields: ClassVar[tuple[_Field, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = tuple(v for v in vars(cls).values() if isinstance(v, _Field))
        for f in own:
            delattr(cls, f.name)  # an instance's value is in its __dict__, always set by __init__
        cls._fields = (*cls._fields, *own)

    def __init__(self, **values: Any) -> None:
        for f in self._fields:
            value = values.pop(f.name, f.default)
            if value is _ABSENT:
                raise TypeError(f"{type(self).__name__}() needs the keyword argument {f.name!r}")
            try:
                value = f.check(value)
            except CatalogError as exc:
                raise exc.at(f.name) from None
            object.__setattr__(self, f.name, value)
        if values:
            raise TypeError(
                f"{type(self).__name__}() takes no keyword argument {', '.join(map(repr, values))}"
            )
        self._consistent()

    def _consistent(self) -> None:
        """The checks between fields; each record with some overrides this."""

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        values = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._fields)
        return f"{type(self).__name__}({values})"

    @classmethod
    def from_data(cls: type[R], data: Any, **given: Any) -> R:
        """The record from a data file's mapping; ``given`` are fields that are not in it (its name)."""
        names = [f.name for f in cls._fields if f.name not in given]
        if not isinstance(data, Mapping):
            raise CatalogError("", data, "a mapping of " + ", ".join(names), "not a mapping")
        for key, value in data.items():
            if key not in names:
                raise CatalogError(str(key), value, f"the keys {', '.join(names)}", "unknown key")
        for f in cls._fields:
            if f.default is _ABSENT and f.name not in data and f.name not in given:
                raise CatalogError(f.name, _ABSENT, f"{cls.__name__}'s keys {', '.join(names)}", "missing")
        return cls(**given, **data)

    def model_copy(self: R, *, update: Mapping[str, Any] | None = None) -> R:
        """A copy with ``update``'s fields replaced, checked as any record is (pydantic's name)."""
        return type(self)(**{**{f.name: getattr(self, f.name) for f in self._fields}, **(update or {})})


#: A CUDA compute capability, ``major.minor``.
_CC = _pattern(r"\d+\.\d+", "a compute capability such as 8.0")


class Quantization(_Record):
    """How weights are stored: bits per weight, and the GPU generation its kernels need."""

    name: str = _field(_string)
    bits_per_weight: float = _field(_number(gt=0))
    min_compute_capability: str | None = _field(_optional(_CC), default=None)
    source: str = _field(_string)

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8


class Mla(_Record):
    """Multi-head latent attention (DeepSeek V3/R1): the latent that the KV cache holds per token."""

    kv_lora_rank: int = _field(_positive)
    qk_rope_head_dim: int = _field(_positive)


class Moe(_Record):
    """Mixture of experts: how many experts there are and how many a token uses."""

    routed_experts: int = _field(_positive)
    shared_experts: int = _field(_integer(ge=0))
    experts_per_token: int = _field(_positive)
    moe_intermediate_size: int = _field(_positive)
    dense_layers: int = _field(_integer(ge=0))


class Model(_Record):
    """A model as the catalog knows it (an Ollama tag), with its architecture from config.json."""

    name: str = _field(_string)
    display_name: str = _field(_string)
    family: str = _field(_string)
    params: int = _field(_positive)
    active_params: int = _field(_positive)
    layers: int = _field(_positive)
    hidden_size: int = _field(_positive)
    intermediate_size: int = _field(_positive)
    attention_heads: int = _field(_positive)
    kv_heads: int = _field(_positive)
    head_dim: int = _field(_positive)
    vocab_size: int = _field(_positive)
    attention: Literal["gqa", "mla"] = _field(_one_of("gqa", "mla"))
    mla: Mla | None = _field(_optional(_record(Mla)), default=None)
    moe: Moe | None = _field(_optional(_record(Moe)), default=None)
    max_context: int = _field(_positive)
    ollama_tag: str = _field(_string)
    hf_repo: str = _field(_string)
    licence: str = _field(_string)
    quantizations: tuple[str, ...] = _field(_tuple_of(_string))
    source: str = _field(_string)

    def _consistent(self) -> None:
        if (self.attention == "mla") != (self.mla is not None):
            raise CatalogError(
                "mla",
                self.mla,
                "an mla block when attention is mla, none otherwise",
                f"{self.name}: 'mla' block is required exactly when attention is mla",
            )
        if self.active_params > self.params:
            raise CatalogError(
                "active_params",
                self.active_params,
                f"at most params ({self.params})",
                f"{self.name}: active_params exceeds params",
            )
        if self.moe is None and self.active_params != self.params:
            raise CatalogError(
                "active_params",
                self.active_params,
                f"params ({self.params}), or a moe block",
                f"{self.name}: a dense model has active_params == params",
            )

    @property
    def is_moe(self) -> bool:
        return self.moe is not None


def _cc(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Gpu(_Record):
    """A GPU: the memory a runtime can allocate, bandwidth, throughput, compute capability."""

    name: str = _field(_string)
    compute_capability: str = _field(_CC)
    marketing_memory_gb: int = _field(_positive)
    memory_mib: int = _field(_positive)
    bandwidth_gbs: int = _field(_positive)
    bf16_tflops: float | None = _field(_optional(_number()))  # required, may be null
    fp16_tflops: float = _field(_number())
    source: str = _field(_string)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    def supports(self, quant: Quantization) -> bool:
        """Whether this GPU has kernels for the quantization (by CUDA compute capability)."""
        need = quant.min_compute_capability
        return need is None or _cc(self.compute_capability) >= _cc(need)


class InstanceType(_Record):
    """An AWS instance type with GPUs, and its on-demand price (see :class:`Pricing`)."""

    name: str = _field(_string)
    gpu: Gpu = _field(_record(Gpu))
    gpu_count: int = _field(_positive)
    vcpu: int = _field(_positive)
    memory_gib: int = _field(_positive)
    price_usd_hour: float = _field(_number(gt=0))
    price_unverified: bool = _field(_flag, default=False)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


#: The methods a route of a runtime's allow-list may take: inference and reading, nothing else.
RouteMethod = Literal["GET", "HEAD", "POST"]
ROUTE_METHODS: tuple[RouteMethod, ...] = ("GET", "HEAD", "POST")
_ROUTE_PATH = re.compile(
    r"/(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*(?:/[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)*)?"
)


class Runtime(_Record):
    """A serving runtime: its port, what it serves, its memory overheads and its API allow-list."""

    name: str = _field(_string)
    port: int = _field(_positive)
    quantizations: tuple[str, ...] = _field(_tuple_of(_string))
    kv_cache_bytes: int = _field(_positive)
    batch_tokens: int = _field(_positive)
    per_gpu_overhead_mib: int = _field(_positive)
    source: str = _field(_string)
    #: The API allow-list (exact path: methods) the proxy and the TLS terminators let through.
    routes: dict[str, tuple[RouteMethod, ...]] = _field(_mapping_of(_tuple_of(_one_of(*ROUTE_METHODS))))
    routes_source: str = _field(_string)

    def _consistent(self) -> None:
        if not self.routes:
            raise CatalogError(
                "routes", self.routes, "path: methods entries", f"{self.name}: routes is empty"
            )
        for path, methods in self.routes.items():
            if not _ROUTE_PATH.fullmatch(path):
                raise CatalogError(
                    "routes",
                    path,
                    "an exact absolute path of letters, digits, '-', '_' and inner dots",
                    f"{self.name}: route {path!r} is not a plain absolute path",
                )
            if not methods or len(set(methods)) != len(methods):
                raise CatalogError(
                    f"routes.{path}",
                    methods,
                    "one or more of: " + ", ".join(ROUTE_METHODS) + ", each once",
                    f"{self.name}: route {path} lists no methods, or one twice",
                )

    @property
    def per_gpu_overhead_bytes(self) -> int:
        return self.per_gpu_overhead_mib * 1024 * 1024


class Pricing(_Record):
    """Where and when the instance prices were recorded: every figure shown names its region."""

    region: str = _field(_string)
    recorded: str = _field(_string)
    source: str = _field(_string)
    note: str = _field(_string, default="")

    @property
    def label(self) -> str:
        """What a price figure is, e.g. ``us-east-1 on-demand``."""
        return f"{self.region} on-demand"

    def describe(self, usd_per_hour: float, hours_per_month: int | None = None) -> str:
        """A price as a user sees it, always with its region: ``$1.86/h (us-east-1 on-demand)``.

        With ``hours_per_month``: ``$1.86/h, $1,359/month at 730 h (us-east-1 on-demand)``.
        """
        text = f"${usd_per_hour:,.2f}/h"
        if hours_per_month:
            text += f", ${usd_per_hour * hours_per_month:,.0f}/month at {hours_per_month} h"
        return f"{text} ({self.label})"


#: Ollama's default tag: ``ollama pull NAME`` fetches ``NAME:latest``.
OLLAMA_DEFAULT_TAG = "latest"


class OllamaLatest(_Record):
    """Which catalog entry Ollama's ``NAME:latest`` is, for one library name (reviewed data)."""

    name: str = _field(_string)
    model: str | None = _field(_optional(_string))  # None: none of the catalog's entries
    source: str = _field(_string)
    note: str = _field(_string, default="")


#: The data file each section of the catalog is read from.
SECTION_FILES = {
    "quantizations": "models.yaml",
    "models": "models.yaml",
    "ollama_latest": "models.yaml",
    "gpus": "gpus.yaml",
    "instances": "gpus.yaml",
    "pricing": "gpus.yaml",
    "runtimes": "runtimes.yaml",
}


def _unknown(
    section: str, name: str, key: str, names: tuple[str, ...], known: Mapping[str, Any], what: str
) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CatalogError(
            f"{section}.{name}.{key}",
            unknown,
            f"{what} of the catalog: " + ", ".join(known),
            f"{name} lists unknown {what} {', '.join(unknown)}",
        )


class Catalog(_Record):
    """Every section of the data files, cross-checked: each name an entry gives is in the catalog."""

    quantizations: dict[str, Quantization] = _field(_mapping_of(_record(Quantization)))
    models: dict[str, Model] = _field(_mapping_of(_record(Model)))
    gpus: dict[str, Gpu] = _field(_mapping_of(_record(Gpu)))
    instances: dict[str, InstanceType] = _field(_mapping_of(_record(InstanceType)))
    runtimes: dict[str, Runtime] = _field(_mapping_of(_record(Runtime)))
    pricing: Pricing = _field(_record(Pricing))
    ollama_latest: dict[str, OllamaLatest] = _field(_mapping_of(_record(OllamaLatest)))

    def _consistent(self) -> None:
        """Each entry under its own name, and every name an entry gives is one the catalog has."""
        for section in ("quantizations", "models", "gpus", "instances", "runtimes", "ollama_latest"):
            for key, entry in getattr(self, section).items():
                if entry.name != key:
                    raise CatalogError(f"{section}.{key}.name", entry.name, repr(key), "not the entry's key")
        for m in self.models.values():
            _unknown("models", m.name, "quantizations", m.quantizations, self.quantizations, "quantizations")
        for i in self.instances.values():
            _unknown("instances", i.name, "gpu", (i.gpu.name,), self.gpus, "gpus")
            if i.gpu != self.gpus[i.gpu.name]:
                raise CatalogError(
                    f"instances.{i.name}.gpu", i.gpu, repr(self.gpus[i.gpu.name]), "another gpu"
                )
        for r in self.runtimes.values():
            _unknown(
                "runtimes", r.name, "quantizations", r.quantizations, self.quantizations, "quantizations"
            )
        for entry in self.ollama_latest.values():
            if ":" in entry.name or (
                entry.model is not None and not entry.model.startswith(f"{entry.name}:")
            ):
                raise CatalogError(
                    f"ollama_latest.{entry.name}",
                    entry.model,
                    f"a name without a tag, and a model {entry.name}:TAG or null",
                    f"ollama_latest.{entry.name}: not a name without a tag",
                )
            if entry.model is not None and entry.model not in self.models:
                raise CatalogError(
                    f"ollama_latest.{entry.name}.model",
                    entry.model,
                    "a model of the catalog, or null",
                    f"ollama_latest.{entry.name} names unknown model {entry.model!r}",
                )
        unrecorded = sorted({m.partition(":")[0] for m in self.models} - set(self.ollama_latest))
        if unrecorded:
            raise CatalogError(
                "ollama_latest",
                unrecorded,
                "an entry for every model name without its tag",
                f"ollama_latest does not record {', '.join(unrecorded)}",
            )

    def resolve_model(self, name: str, key: str = "model") -> tuple[Model, str]:
        """The catalog model a user means by ``name``, and how a name without a tag was read.

        The one place a model name is looked up (``llmkit size``, ``llmkit:models``, the
        gateway's aliases). Names are Ollama tags (``deepseek-r1:32b``); a name without a tag,
        or with Ollama's default tag (``deepseek-v3``, ``deepseek-v3:latest``), is the entry
        that ``ollama pull NAME`` fetches when the catalog records it (``ollama_latest`` in
        ``models.yaml``), else the only catalog entry of that name. Anything else is a
        :class:`ConfigError` under ``key`` that lists the matching tags (exit 2). The second
        value is empty when ``name`` is a catalog name, else it says how it was resolved.
        """
        if name in self.models:
            return self.models[name], ""
        base, _, tag = name.partition(":")
        tags = [m for m in self.models if m.partition(":")[0] == base]
        if base and tag in ("", OLLAMA_DEFAULT_TAG):
            latest = self.ollama_latest.get(base)
            if latest is not None and latest.model is not None:
                return self.models[latest.model], (
                    f"{name} is {latest.model}: what `ollama pull {base}` fetches "
                    f"({base}:{OLLAMA_DEFAULT_TAG})"
                )
            if len(tags) == 1:
                return self.models[tags[0]], f"{name} is {tags[0]}: the only {base} model in the catalog"
            if tags:
                why = (
                    f"Ollama's default {base}:{OLLAMA_DEFAULT_TAG} is none of them"
                    if latest is not None
                    else f"the catalog does not record which one {base}:{OLLAMA_DEFAULT_TAG} is"
                )
                raise ConfigError(
                    key=key,
                    value=name,
                    accepted="one of: " + ", ".join(tags),
                    message=f"ambiguous: {len(tags)} catalog models are named {base}, and {why}; "
                    "give the tag",
                )
        raise ConfigError(
            key=key, value=name, accepted="one of: " + ", ".join(tags or self.models), message="unknown model"
        )

    def model(self, name: str, key: str = "model") -> Model:
        """:meth:`resolve_model`'s model."""
        return self.resolve_model(name, key)[0]

    def quantization(self, name: str) -> Quantization:
        try:
            return self.quantizations[name]
        except KeyError:
            raise ConfigError(
                key="quantization",
                value=name,
                accepted=", ".join(self.quantizations),
                message="unknown quantization",
            ) from None

    def runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise ConfigError(
                key="runtime", value=name, accepted=", ".join(self.runtimes), message="unknown runtime"
            ) from None

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instances[name]
        except KeyError:
            raise ConfigError(
                key="instance_type",
                value=name,
                accepted=", ".join(self.instances),
                message="unknown instance type",
            ) from None


def _read(name: str) -> dict[str, Any]:
    path = os.path.join(DATA_DIR, name)
    # libyaml's loader (in PyYAML's wheels) parses the catalog 8x faster than the pure-Python one.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.load(file.read(), Loader=loader)
    except yaml.YAMLError as exc:
        raise CatalogError("", path, "YAML", f"not YAML ({exc})", f"llmkit/data/{name}") from None
    if not isinstance(data, dict):
        raise CatalogError("", data, "a mapping at the top level", "not a mapping", f"llmkit/data/{name}")
    return data


def _entries(
    doc: dict[str, Any], section: str, cls: type[R], prepare: Callable[[Any], Any] | None = None
) -> dict[str, R]:
    """``doc[section]``'s entries as ``cls`` records, each given its name (its key)."""
    entries = doc.get(section, _ABSENT)
    if not isinstance(entries, dict):
        raise CatalogError(section, entries, f"a mapping of name: {cls.__name__} entries", "not a mapping")
    records = {}
    for name, data in entries.items():
        try:
            if not isinstance(name, str):
                raise CatalogError("", name, "a string", "a name that is not a string")
            records[name] = cls.from_data(prepare(data) if prepare else data, name=name)
        except CatalogError as exc:
            raise exc.at(f"{section}.{name}") from None
    return records


@cache
def load_catalog() -> Catalog:
    """Load and check the data files once per process; :class:`CatalogError` names a bad entry."""
    try:
        models_doc, gpus_doc, runtimes_doc = (_read(n) for n in ("models.yaml", "gpus.yaml", "runtimes.yaml"))
        gpus = _entries(gpus_doc, "gpus", Gpu)

        def with_gpu(data: Any) -> Any:
            """An instance names its GPU; its record holds that GPU's entry."""
            name = data.get("gpu") if isinstance(data, dict) else None
            if not isinstance(name, str):
                return data  # refused by the record's own checks
            if name not in gpus:
                raise CatalogError("gpu", name, "a gpu of the catalog: " + ", ".join(gpus), "unknown gpu")
            return {**data, "gpu": gpus[name]}

        pricing = gpus_doc.get("pricing", _ABSENT)
        try:
            pricing = Pricing.from_data(pricing)
        except CatalogError as exc:
            raise exc.at("pricing") from None
        return Catalog(
            quantizations=_entries(models_doc, "quantizations", Quantization),
            models=_entries(models_doc, "models", Model),
            gpus=gpus,
            instances=_entries(gpus_doc, "instances", InstanceType, with_gpu),
            runtimes=_entries(runtimes_doc, "runtimes", Runtime),
            pricing=pricing,
            ollama_latest=_entries(models_doc, "ollama_latest", OllamaLatest),
        )
    except CatalogError as exc:
        if exc.file:
            raise
        file = f"llmkit/data/{SECTION_FILES.get(exc.key.partition('.')[0], '')}"
        raise CatalogError(exc.key, exc.value, exc.accepted, exc.problem, file) from None

"""What a collector module declares: its metrics (:class:`MetricDoc`), its options (a frozen
dataclass and the :class:`Flag` of each field) and itself (:func:`register`).

This module imports nothing of the collectors and nothing of the scrape: collectors import it,
and the scrape (:mod:`exporter.scrape`), the command line and the reference generator read what
was registered. A collector that gains a flag changes only its own module.

**The rule for missing data**, which every collector follows: a file that a kernel may lack
(IPv6 off, a module not loaded, a sysctl an older kernel does not have) is *no data*: its
reader returns None (:func:`exporter.procfs.read_parsed`) and the collector emits nothing for it
and succeeds. Anything else that goes wrong (a malformed file, a file every Linux has that
cannot be read) raises, and the scrape drops only that collector's metrics and reports
``netstat_exporter_collector_success{collector} 0``. So a collector reads::

    data = reader.read_x(self.procfs)
    if data is None:
        return  # the kernel has no such file: no data
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Generic,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from exporter.config import Config
from exporter.rows import CounterRows, GaugeRows
from exporter.sockets.snapshot import Snapshot, Wants
from exporter.system import System, load

NAMESPACE = "netstat"
SYSTEMS = ("linux", "windows", "darwin")
LINUX = ("linux",)


class Collector(Protocol):
    """What a collector is: something that yields fresh metric families on every call."""

    def collect(self) -> Iterable[Metric]: ...


Factory = Callable[[Config], Collector]
T = TypeVar("T")
OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class MetricDoc:
    """One metric a collector can emit: the single source of its name, type, help and labels.

    ``docs/metrics.md`` is generated from these, and collectors build their families from them
    (:meth:`family`), so the reference and the exposition cannot drift apart. ``name`` is the
    name as exposed (counters end in ``_total``).
    """

    name: str
    type: str  # "gauge" or "counter"
    help: str
    labels: Tuple[str, ...] = ()
    note: str = ""  # shown in the reference only (e.g. "only with --collector.x.flag")
    # The systems that can emit it, where its collector runs (docs/metrics.md's columns):
    # "linux", "windows", "darwin". Linux-only facts (sockstat, queue bytes) say so here.
    systems: Tuple[str, ...] = ("linux", "windows", "darwin")

    def __post_init__(self) -> None:
        if self.type not in ("gauge", "counter"):
            raise ValueError(f"{self.name}: type must be gauge or counter")
        if (self.type == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")
        if not set(self.systems) <= set(SYSTEMS):
            raise ValueError(f"{self.name}: systems must be among {', '.join(SYSTEMS)}")

    def family(self) -> Union[GaugeMetricFamily, CounterMetricFamily]:
        """A fresh, empty family for one scrape: a copy of one built (and so validated by
        client_python) once, which is a fifth of the cost of building it again. A scrape
        makes a hundred of them."""
        proto: Union[GaugeMetricFamily, CounterMetricFamily, None] = \
            self.__dict__.get("_prototype")
        if proto is None:
            if self.type == "counter":
                proto = CounterRows(self.name[: -len("_total")], self.help, list(self.labels))
            else:
                proto = GaugeRows(self.name, self.help, list(self.labels))
            object.__setattr__(self, "_prototype", proto)  # a cache, not a field
        fam = proto.__class__.__new__(proto.__class__)
        fam.__dict__.update(proto.__dict__)
        fam.samples = []
        return fam

    def add(self, family: Metric, labels: Dict[str, str], value: float) -> None:
        """Add a sample to ``family`` (made by :meth:`family`) with ``labels`` as given, name
        to value, every label of the family present. Unlike ``add_metric`` the dict is not
        copied: a collector adding many samples with one set of labels (one namespace's) shares
        one dict among them, and must not change it afterwards. A family of rows
        (:mod:`exporter.rows`) takes the values in the declared order instead."""
        rows = family.__dict__.get("_rows")
        names = self.labels
        if rows is not None and len(labels) == len(names):
            try:
                rows.append((tuple([labels[n] for n in names]), value))
                return
            except KeyError:
                pass  # labels other than the declared ones: as client_python would have them
        family.samples.append(Sample(self.name, labels, value, None))


class Base(Generic[OptionsT]):
    """What every collector class starts from: ``procfs`` (the /proc root), ``system`` (the
    seam of :mod:`exporter.system`, shared by the collectors) and ``opts``, its options in
    ``config`` or their defaults (None for a collector without options), found by the name and
    the options class :func:`register` gave it. The smallest collector is::

        @register("x", default_enabled=True, metrics=METRICS)
        class XCollector(Base[None]):
            '''what it exports and from where (its --help line)'''

            def collect(self) -> Iterator[Metric]:
                ...

    A collector with more to set up calls ``super().__init__(config)`` first."""

    registered: ClassVar[Tuple[str, Optional[Type[Any]]]]  # (name, options class): register's

    def __init__(self, config: Config) -> None:
        name, cls = self.registered
        self.procfs = config.procfs
        self.system: System = load(config)
        self.opts: OptionsT = options(config, name, cls) if cls is not None else None  # type: ignore[assignment]


class SocketBase(Base[OptionsT], abc.ABC):
    """A collector that counts the socket tables (:class:`exporter.scrape.SocketUser`): it says
    what it wants of them (:meth:`socket_wants`) and counts one snapshot
    (:meth:`collect_snapshot`), which a scrape shares among such collectors; ``collect()``
    alone takes a snapshot of its own. The tables come from its ``source`` option, or from
    the first source that answers (``auto``) for a collector without one."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.socket_source = self.system.socket_source(getattr(self.opts, "source", "auto"))

    def socket_wants(self) -> Wants:
        return Wants()  # counts and queues only

    def snapshot(self) -> Snapshot:
        """A snapshot of this collector's own, to be closed (a context manager)."""
        return Snapshot(self.procfs, self.socket_source, wants=self.socket_wants(),
                        system=self.system)

    def collect(self) -> Iterator[Metric]:
        with self.snapshot() as snap:
            yield from list(self.collect_snapshot(snap))

    @abc.abstractmethod
    def collect_snapshot(self, snap: Snapshot) -> Iterator[Metric]:
        """This collector's metrics from a snapshot the scrape shares."""


@dataclass(frozen=True)
class Flag:
    """The command-line flag of one field of a collector's option dataclass.

    The flag is ``--collector.<collector>.<name>`` (``name`` defaults to the field name with
    dashes), its environment variable follows from it, and its default and type are the
    field's: a bool field is a ``--x/--no-x`` pair, an int or float field a number (within
    ``min``/``max`` if given), a str field text (one of ``choices`` if given). Validation beyond
    that belongs in the dataclass's ``__post_init__``, raising a
    :class:`~exporter.config.ConfigError` whose message is one line.
    """

    field: str
    help: str
    name: str = ""
    choices: Tuple[str, ...] = ()
    min: Optional[float] = None
    max: Optional[float] = None

    def flag(self, collector: str) -> str:
        return f"--collector.{collector}.{self.name or self.field.replace('_', '-')}"


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    default_enabled: bool
    description: str
    factory: Factory
    metrics: Tuple[MetricDoc, ...] = ()
    options: Optional[Type[Any]] = None  # a frozen dataclass, every field with a default
    flags: Tuple[Flag, ...] = ()

    def option_default(self, field: str) -> Any:
        assert self.options is not None
        for f in dataclasses.fields(self.options):
            if f.name == field:
                return f.default
        raise KeyError(field)


# The collectors in the order of the exposition, the reference (docs/metrics.md) and --help:
# most asked-for first, not alphabetical. Every collector module is named here;
# tests/test_api.py holds this tuple to the registered set, so a new collector must be placed.
ORDER: Tuple[str, ...] = (
    "sockets", "listeners", "protocols", "interfaces", "routes", "ports", "limits", "netns",
    "tcpevents",
)

_SPECS: Dict[str, CollectorSpec] = {}
_OWNERS: Dict[str, str] = {}  # metric name -> collector


def register(name: str, *, default_enabled: bool, description: str = "",
             metrics: Sequence[MetricDoc] = (), options: Optional[Type[Any]] = None,
             flags: Sequence[Flag] = ()) -> Callable[[Factory], Factory]:
    """Class or function decorator: register a collector factory under ``name``, with the
    metrics it can emit and its options. ``description`` (one line of ``--help`` and the
    reference's paragraph) defaults to the factory's docstring, white space folded. Refuses a
    name registered twice and a metric name that another collector (or the exporter itself)
    already declares: two collectors emitting one name would make the exposition invalid
    whenever both are on. A :class:`Base` subclass learns here which options are its own."""

    def deco(factory: Factory) -> Factory:
        if name in _SPECS:
            raise RuntimeError(f"collector {name!r} registered twice")
        text = description or " ".join((factory.__doc__ or "").split())
        if not text:
            raise RuntimeError(f"collector {name!r}: no description and no docstring")
        for m in metrics:
            owner = _OWNERS.get(m.name)
            if owner is not None and owner != name:
                raise RuntimeError(f"collector {name!r} declares metric {m.name!r}, which "
                                   f"{owner!r} already declares")
        if options is not None:
            fields = {f.name for f in dataclasses.fields(options)}
            for fl in flags:
                if fl.field not in fields:
                    raise RuntimeError(f"collector {name!r}: flag for unknown option "
                                       f"{fl.field!r}")
        for m in metrics:
            _OWNERS[m.name] = name
        _SPECS[name] = CollectorSpec(name, default_enabled, text, factory,
                                     tuple(metrics), options, tuple(flags))
        if isinstance(factory, type) and issubclass(factory, Base):
            factory.registered = (name, options)
        return factory

    return deco


def reserve(owner: str, metrics: Iterable[MetricDoc]) -> None:
    """Declare metric names that no collector may declare (the exporter's own)."""
    for m in metrics:
        prev = _OWNERS.get(m.name)
        if prev is not None and prev != owner:
            raise RuntimeError(f"{owner!r} declares metric {m.name!r}, which {prev!r} already "
                               "declares")
        _OWNERS[m.name] = owner


def specs() -> Mapping[str, CollectorSpec]:
    """Every registered collector by name, in :data:`ORDER` whatever order their modules were
    imported in (importing this module imports :mod:`exporter.collectors`, which registers
    them all); one not in :data:`ORDER` (a test's) comes after, in registration order."""
    out = {name: _SPECS[name] for name in ORDER if name in _SPECS}
    out.update((name, spec) for name, spec in _SPECS.items() if name not in out)
    return out


def options(config: Config, name: str, cls: Type[T]) -> T:
    """The options of collector ``name`` in ``config``, or the defaults."""
    value = config.options.get(name)
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise TypeError(f"options of {name!r} must be {cls.__name__}, not {type(value).__name__}")
    return value

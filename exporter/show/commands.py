"""The ``show`` and ``top`` subcommands: their flags, where the exposition comes from, and which
view prints it. The exporter's own flags (``--path.procfs``, collector options...) apply to the
local collection and may stand before ``show``/``top``, between ``show`` and the view, or after
the view, as with ``dump``.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import click

from exporter.show import counters, interfaces, listeners, ports, routes, states
from exporter.show.reading import Reading, ShowError
from exporter.show.source import Remote, local_reader, normalise_url, remote_reader
from exporter.show.table import View, render_json, render_text

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
PROG = "netstat-exporter"
ENV_PREFIX = "NETSTAT_EXPORTER_"
PASSWORD_ENV = ENV_PREFIX + "AUTH_PASSWORD"

# What each view needs collected locally, and the collector flags it sets unless given: the
# whole routing table, the busiest destinations, every protocol counter (netstat -s shows them
# all; an exporter's default set is smaller). Flags are named as on the command line, whatever
# the parameter behind them is called.
NEEDS: Dict[str, Tuple[Tuple[str, ...], Dict[str, Any]]] = {
    "states": (("sockets",), {}),
    "listeners": (("listeners",), {}),
    "counters": (("protocols",), {"--collector.protocols.fields": ".*"}),
    "interfaces": (("interfaces",), {}),
    "routes": (("routes",), {"--collector.routes.table": True}),
    "ports": (("ports", "limits"), {"--collector.ports.top-destinations": 10}),
    "top": (("sockets", "listeners", "protocols", "interfaces", "ports", "limits"),
            {"--collector.protocols.fields": ".*"}),
}
SWITCH = "--collector."
VIEWS = ("states", "listeners", "counters", "interfaces", "routes", "ports")


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def _opt(flag: str, dest: str, **kw: Any) -> Decorator:
    return click.option(flag, dest, envvar=_env(flag.split("/")[0]), show_envvar=True, **kw)


def _url(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    try:
        return normalise_url(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


SOURCE_OPTIONS: List[Decorator] = [
    _opt("--url", "url", default=None, callback=_url,
         help="Read a running exporter (host:port or a URL; /metrics is added to a bare host) "
              "instead of collecting on this host; the collector flags then do not apply."),
    _opt("--tls.ca-file", "tls_ca_file", default="",
         help="CA certificate(s) to verify the exporter's TLS certificate with."),
    _opt("--tls.cert-file", "tls_cert_file", default="",
         help="Client certificate, for an exporter that asks for one."),
    _opt("--tls.key-file", "tls_key_file", default="", help="Key of --tls.cert-file."),
    _opt("--tls.server-name", "tls_server_name", default="",
         help="Name the certificate must carry, when it differs from the URL's host "
              "(kubectl port-forward to localhost)."),
    _opt("--tls.insecure-skip-verify/--no-tls.insecure-skip-verify", "tls_insecure",
         default=False, help="Do not verify the exporter's certificate."),
    _opt("--auth.username", "auth_username", default="", help="Basic auth user name."),
    _opt("--auth.password-file", "auth_password_file", default="",
         help=f"File holding the basic auth password (or set {PASSWORD_ENV})."),
    _opt("--timeout", "timeout", type=click.FloatRange(min=0.1, max=600), default=10.0,
         show_default=True, help="Seconds to wait for the exporter."),
    _opt("--width", "width", type=click.IntRange(min=40, max=1000), default=None,
         help="Columns to fit the text into (default: the terminal's, 80 in a pipe)."),
]
OUTPUT_OPTION = click.option("--output", "-o", "output", type=click.Choice(["text", "json"]),
                             default="text", show_default=True, envvar=_env("--output"),
                             show_envvar=True, help="Plain text for people, JSON for scripts.")


def _apply(f: Callable[..., Any], opts: List[Decorator]) -> Callable[..., Any]:
    for o in reversed(opts):
        f = o(f)
    return f


def merged_params(ctx: click.Context) -> Tuple[Dict[str, Any], Set[str]]:
    """Every parameter of this command and its parents, the innermost value given on the command
    line (or in the environment) winning; and the names that were given."""
    chain: List[click.Context] = []
    c: Optional[click.Context] = ctx
    while c is not None:
        chain.append(c)
        c = c.parent
    out: Dict[str, Any] = {}
    given: Set[str] = set()
    for c in reversed(chain):
        for k, v in c.params.items():
            src = c.get_parameter_source(k)
            if src not in (None, click.core.ParameterSource.DEFAULT):
                out[k] = v
                given.add(k)
            elif k not in given:
                out[k] = v
    return out, given


def _dests(ctx: click.Context) -> Dict[str, str]:
    """Command-line flag -> the parameter name click stores it under."""
    return {flag: p.name for p in ctx.command.params if isinstance(p, click.Option) and p.name
            for flag in p.opts}


def _available(view: str, params: Dict[str, Any]) -> Tuple[Tuple[str, ...], Dict[str, Any]]:
    """What :data:`NEEDS` says of ``view``, less the collectors this system cannot serve (``top``
    on Windows has no ports screen); a view none of whose collectors it serves is an error."""
    from exporter import system

    host = system.load_named(system.resolve(params.get("platform") or "auto"),
                             params.get("procfs") or "/proc", params.get("sysfs") or "/sys")
    wanted, defaults = NEEDS[view]
    collectors = tuple(n for n in wanted if n in host.collectors)
    if not collectors:
        raise ShowError(f"{view} is not available on {host.name}: it needs the "
                        f"{' and '.join(wanted)} collector{'s' if len(wanted) > 1 else ''}")
    return collectors, {flag: v for flag, v in defaults.items()
                        if flag[len(SWITCH):].split(".")[0] in collectors}


def make_reader(ctx: click.Context, view: str, build_config: Callable[[Dict[str, Any]], Any]
                ) -> Tuple[Callable[[], Reading], Dict[str, Any]]:
    params, given = merged_params(ctx)
    if params.get("url"):
        password = os.environ.get(PASSWORD_ENV, "")
        if params["auth_password_file"]:
            try:
                with open(params["auth_password_file"], encoding="utf-8") as f:
                    password = f.read().rstrip("\r\n")
            except OSError as e:
                raise ShowError(f"--auth.password-file {params['auth_password_file']!r}: "
                                f"{e.strerror}") from None
        remote = Remote(params["url"], params["tls_ca_file"], params["tls_cert_file"],
                        params["tls_key_file"], params["tls_server_name"], params["tls_insecure"],
                        params["auth_username"], password, params["timeout"])
        return remote_reader(remote), params
    collectors, defaults = _available(view, params)
    # The collector switches are the root command's alone: a view turns on what it needs.
    dests = {**_dests(ctx.find_root()), **_dests(ctx)}
    local = dict(params)
    local[dests["--collector.disable-defaults"]] = True
    for flag, dest in dests.items():  # --collector.<name>: each collector's on/off switch
        name = flag[len(SWITCH):]
        if flag.startswith(SWITCH) and "." not in name and name != "disable-defaults":
            local[dest] = True if name in collectors else None
    for flag, v in defaults.items():
        dest = dests[flag]
        if dest not in given:
            local[dest] = v
    config = build_config(local)
    from exporter import logs
    from exporter.exposition import generate_text
    from exporter.scrape import Exporter

    logs.setup(config.log_level, config.log_format)
    target = Exporter(config).target()
    label = "this host" if config.procfs == "/proc" else config.procfs
    return local_reader(lambda: generate_text(target), label), params


def width_of(params: Dict[str, Any]) -> int:
    if params.get("width"):
        return int(params["width"])
    if sys.stdout.isatty():
        return max(40, shutil.get_terminal_size((80, 24)).columns)
    return 80


def ellipsis() -> str:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "…".encode(enc)
        return "…"
    except (UnicodeEncodeError, LookupError):
        return "~"


def failed_collectors(snap: Reading) -> List[str]:
    """Collectors whose success gauge (netstat_exporter_collector_success) says 0."""
    from exporter.scrape import SCRAPE_METRICS

    names = [m.name for m in SCRAPE_METRICS
             if m.labels == ("collector",) and m.name.endswith("_success")]
    return sorted(s.get("collector") for n in names for s in snap.all(n) if s.value == 0)


def emit(view: View, params: Dict[str, Any], snap: Reading) -> None:
    view.failed = failed_collectors(snap)
    if params.get("output") == "json":
        sys.stdout.write(render_json(view))
    else:
        sys.stdout.write(render_text(view, width_of(params), ellipsis()))
    sys.stdout.flush()


def fail(ctx: click.Context, e: ShowError) -> None:
    print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
    ctx.exit(1)


Options = Callable[[Callable[..., Any]], Callable[..., Any]]
ConfigBuilder = Callable[[Dict[str, Any]], Any]

# The views that take no flags of their own: name, what builds its tables, help.
PLAIN_VIEWS: Tuple[Tuple[str, Callable[[Reading], View], str], ...] = (
    ("states", states.build,
     "Sockets by protocol, family and state, zeros included (ss -s, netstat -an counted)."),
    ("listeners", listeners.build,
     "Who listens where: program, executable, user, accept queue against backlog, "
     "connections per port and state, expected verdict (netstat -tulnp, -ano -b)."),
    ("interfaces", interfaces.build, "Traffic, errors and drops per interface (netstat -i)."),
    ("routes", routes.build, "Routes per family and interface, default routes, the "
                             "routing table (netstat -r)."),
    ("ports", ports.build, "Ephemeral port use against the range, busiest destinations."),
)


def make_commands(common_options: Options, build_config: ConfigBuilder) -> List[click.Command]:
    """The ``show`` group and the ``top`` command, built with the exporter's own flags."""
    show = _show_group(common_options)
    for name, build, doc in PLAIN_VIEWS:
        show.command(name)(_apply(common_options(_plain_view(name, build, doc, build_config)),
                                  [*SOURCE_OPTIONS, OUTPUT_OPTION]))
    show.command("counters")(_apply(_counters_view(common_options, build_config),
                                    [*SOURCE_OPTIONS, OUTPUT_OPTION]))
    return [show, _top_command(common_options, build_config)]


def _show_group(common_options: Options) -> click.Group:
    @click.group(invoke_without_command=True,
                 context_settings={"help_option_names": ["-h", "--help"]})
    @common_options
    def show(**_params: Any) -> None:
        """Print what the exporter sees, as netstat would: states, listeners, counters,
        interfaces, routes or ports.

        Collected on this host (as dump does), or read from a running exporter with --url. Plain
        text fits 80 columns in a pipe and carries no escape codes; --output json suits scripts.
        """
        ctx = click.get_current_context()
        if ctx.invoked_subcommand is None:  # `show` alone: a usage error, as git's would be
            raise click.UsageError(f"show needs a view: {', '.join(VIEWS[:-1])} or {VIEWS[-1]} "
                                   f"({PROG} show --help)")

    return show


def _plain_view(name: str, build: Callable[[Reading], View], doc: str,
                build_config: ConfigBuilder) -> Callable[..., None]:
    def cmd(**_params: Any) -> None:
        ctx = click.get_current_context()
        try:
            read, params = make_reader(ctx, name, build_config)
            reading = read()
            emit(build(reading), params, reading)
        except ShowError as e:
            fail(ctx, e)

    cmd.__doc__ = doc
    return cmd


def _counters_view(common_options: Options, build_config: ConfigBuilder) -> Callable[..., None]:
    @click.option("--changed", is_flag=True,
                  help="Only the counters that moved since the last look, with changes and "
                       "rates (nstat's habit); this look becomes the last one.")
    @click.option("--describe", is_flag=True, help="Say what each counter counts.")
    @_opt("--history", "history", default="",
          help="File that keeps the last look for --changed (default: one per source under "
               "$XDG_STATE_HOME or ~/.local/state/netstat-exporter/).")
    @common_options
    def counters_cmd(changed: bool, describe: bool, history: str, **_params: Any) -> None:
        """Protocol counters grouped by protocol (netstat -s, nstat)."""
        ctx = click.get_current_context()
        try:
            read, params = make_reader(ctx, "counters", build_config)
            reading = read()
            before, before_wall = None, None
            path = ""
            if changed:
                key = params["url"] or f"local:{os.path.abspath(params.get('procfs') or '/proc')}"
                path = counters.history_path(key, history)
                before, before_wall = counters.load_history(path)
            emit(counters.build(reading, changed, describe, before, before_wall), params,
                 reading)
            if changed:
                counters.save_history(path, reading)
        except ShowError as e:
            fail(ctx, e)

    return counters_cmd


def _top_command(common_options: Options, build_config: ConfigBuilder) -> click.Command:
    @click.option("--interval", "-n", type=click.FloatRange(min=0.2, max=3600), default=5.0,
                  show_default=True, help="Seconds between refreshes (netstat's interval).")
    @click.option("--count", "-c", type=click.IntRange(min=1), default=None,
                  help="Stop after this many screens (default: until q or Ctrl-C).")
    @common_options
    def top_cmd(interval: float, count: Optional[int], **_params: Any) -> None:
        """One screen of states, fullest accept queues, busiest counters, interface rates and
        ephemeral port use, redrawn every --interval seconds. q or Ctrl-C quits and leaves the
        terminal as it was. In a pipe, screens follow one another without escape codes."""
        from exporter.show.top import run

        ctx = click.get_current_context()
        try:
            read, params = make_reader(ctx, "top", build_config)
            run(read, interval, count or 0, width=params.get("width"))
        except ShowError as e:
            fail(ctx, e)

    return click.command("top", context_settings={"help_option_names": ["-h", "--help"]})(
        _apply(top_cmd, SOURCE_OPTIONS))

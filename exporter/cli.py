"""Command line: turns flags (or NETSTAT_EXPORTER_* environment variables) into a frozen Config.

``netstat-exporter [FLAGS]`` serves metrics; ``netstat-exporter [FLAGS] dump [FLAGS]`` prints one
scrape in the text exposition format and exits; ``show VIEW`` and ``top`` print it as netstat
would (:mod:`exporter.show`). Every error a user can cause ends in one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Any, Callable, Collection, Dict, List, NoReturn, Optional, Sequence, Tuple

import click

from exporter import __version__, logs, system
from exporter.collectors.api import CollectorSpec, Flag, specs
from exporter.config import (
    DEFAULT_LISTEN_ADDRESS,
    Config,
    ConfigError,
    ProcfsPathError,
    SysfsPathError,
    parse_listen_address,
)
from exporter.procfs import not_a_procfs
from exporter.show.commands import make_commands
from exporter.sysfs import not_a_sysfs

PROG = "netstat-exporter"
ENV_PREFIX = "NETSTAT_EXPORTER_"
EXIT_USAGE = 2
EXIT_RUNTIME = 1
log = logging.getLogger(__name__)


class IntRange(click.IntRange):
    """click's IntRange, named as a user reads it: "'abc' is not a valid integer", not "...a
    valid integer range" (the range is in the help, and in the message when it is the fault)."""

    name = "integer"


class FloatRange(click.FloatRange):
    name = "number"


def envvar(flag: str) -> str:
    """``--web.listen-address`` -> ``NETSTAT_EXPORTER_WEB_LISTEN_ADDRESS``."""
    return ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def _opt(flag: str, dest: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    primary = flag.split("/")[0]
    if isinstance(kw.get("default"), bool):
        # click would show the name of the flag that is the default ("no-web.disable-...").
        kw["show_default"] = False
        kw["help"] = f"{kw.get('help', '').rstrip()} Default: {'on' if kw['default'] else 'off'}."
    kw.setdefault("show_default", True)
    return click.option(flag, dest, envvar=envvar(primary), show_envvar=True, **kw)


def _options(server: bool = True) -> List[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """Every flag of the exporter; without ``server``, less the web server's own and the
    collector switches (show and top collect once what their view needs, and print it)."""
    web = [
        _opt("--web.listen-address", "listen_address", multiple=True,
             default=[DEFAULT_LISTEN_ADDRESS],
             help="Address to listen on, [host]:port; repeat for several."),
        _opt("--web.telemetry-path", "telemetry_path", default="/metrics",
             help="Path under which to expose metrics."),
        _opt("--web.max-requests", "max_requests", type=IntRange(min=0), default=40,
             help="Concurrent scrapes served at most; more get 503. 0 means no limit."),
        _opt("--web.disable-exporter-metrics/--no-web.disable-exporter-metrics",
             "disable_exporter_metrics", default=False,
             help="Leave out the exporter's own process_* and build_info metrics."),
        _opt("--web.config.file", "web_config_file", default="",
             help="Path to a configuration file that can enable TLS or basic authentication "
                  "(exporter-toolkit format). Re-read when it changes and on SIGHUP."),
        _opt("--web.read-header-timeout", "read_header_timeout",
             type=FloatRange(min=0.1, max=3600), default=10.0,
             help="Seconds a client has, from connecting, to complete the TLS handshake and "
                  "send the request line and headers; slower clients are disconnected."),
    ]
    opts = [
        *(web if server else []),
        _opt("--platform", "platform", type=click.Choice(list(system.PLATFORMS)),
             default="auto",
             help="Which system's readers to use: auto (this system's: netlink, /proc and /sys "
                  "on Linux; psutil and the system's own calls on Windows and macOS) or "
                  "portable (psutil alone: sockets, listeners and interfaces)."),
        _opt("--path.procfs", "procfs", default="/proc", help="procfs mount point (Linux)."),
        _opt("--path.sysfs", "sysfs", default="/sys", help="sysfs mount point (Linux)."),
        *([_opt("--collector.disable-defaults/--no-collector.disable-defaults",
                "disable_defaults", default=False,
                help="Enable only the collectors named with --collector.<name>.")]
          if server else []),
        _opt("--log.level", "log_level", type=click.Choice(list(logs.LEVELS)), default="info",
             help="Only log messages with the given severity or above."),
        _opt("--log.format", "log_format", type=click.Choice(["logfmt", "json"]),
             default="logfmt", help="Output format of log messages."),
    ]
    for name, spec in specs().items():
        state = "on" if spec.default_enabled else "off"
        if server:
            opts.append(_opt(f"--collector.{name}/--no-collector.{name}", f"collector_{name}",
                             default=None, show_default=False,
                             help=f"Enable the {name} collector (default {state}): "
                                  f"{spec.description}"))
        opts += [_collector_flag(spec, f) for f in spec.flags]
    return opts


def _dest(collector: str, field: str) -> str:
    return f"opt__{collector}__{field}"


def _collector_flag(spec: CollectorSpec, f: Flag) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of a flag a collector declares (exporter.collectors.api.Flag)."""
    flag, default = f.flag(spec.name), spec.option_default(f.field)
    kw: Dict[str, Any] = {"default": default, "help": f.help}
    if isinstance(default, bool):
        flag = f"{flag}/--no-{flag[2:]}"
    elif f.choices:
        kw["type"] = click.Choice(list(f.choices))
    elif isinstance(default, int):
        kw["type"] = IntRange(min=f.min, max=f.max)  # type: ignore[arg-type]
    elif isinstance(default, float):
        kw["type"] = FloatRange(min=f.min, max=f.max)
    return _opt(flag, _dest(spec.name, f.field), **kw)


def collector_options(params: Dict[str, Any]) -> Dict[str, Any]:
    """Each collector's option dataclass built from its flags' values; a value the dataclass
    refuses raises its ConfigError."""
    out: Dict[str, Any] = {}
    for name, spec in specs().items():
        if spec.options is None:
            continue
        values = {f.field: params[_dest(name, f.field)] for f in spec.flags
                  if _dest(name, f.field) in params}
        out[name] = spec.options(**values)
    return out


def ignored(params: Dict[str, Any], config: Config) -> List[str]:
    """What the command line asks for that will do nothing: a collector's flag while that
    collector is off, or no collector at all. Said at start, at warn, as a flag that does
    nothing is most likely a mistake."""
    out = []
    if not config.collectors:
        out.append("no collector is enabled: scrapes carry the exporter's own metrics only "
                   "(--collector.<name> turns one on)")
    for name, flag in _set_flags(params, config.collectors):
        out.append(f"{flag} does nothing: the {name} collector is off "
                   f"(--collector.{name} turns it on)")
    return out


def _start_logging(params: Dict[str, Any], config: Config) -> None:
    logs.setup(config.log_level, config.log_format)
    for message in ignored(params, config):
        log.warning(message)


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for o in reversed(_options()):
        f = o(f)
    return f


def local_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The flags of a local collection (show, top): the exporter's less the web server's and
    the collector switches, which they neither offer nor list (given before the subcommand,
    they do nothing)."""
    for o in reversed(_options(server=False)):
        f = o(f)
    return f


def _check_root(flag: str, root: str, kind: str, why_not: Callable[[str], Optional[str]],
                error: Callable[[str], ConfigError]) -> None:
    """Refuse a --path.procfs or --path.sysfs that is not a readable tree of its kind: with one,
    every collector reading it would report nothing, or nothing of it, and no error."""
    if not os.path.isdir(root):
        raise error(f"{flag} {root!r} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise error(f"{flag} {root!r} is not readable")
    reason = why_not(root)
    if reason:
        raise error(f"{flag} {root!r} is not a {kind}: it {reason}")


def _given(params: Dict[str, Any], host: system.System) -> List[str]:
    """The flags set to other than their default that ``host`` might refuse: the paths, and
    the options of the collectors it cannot serve."""
    given = [flag for flag, dest, default in (("--path.procfs", "procfs", "/proc"),
                                               ("--path.sysfs", "sysfs", "/sys"))
             if params.get(dest, default) != default]
    return given + [flag for _, flag in _set_flags(params, host.collectors)]


def _set_flags(params: Dict[str, Any], but: Collection[str]) -> List[Tuple[str, str]]:
    """(collector, flag) of every collector flag set to other than its default, for the
    collectors not in ``but``."""
    return [(name, f.flag(name)) for name, spec in specs().items() if name not in but
            for f in spec.flags
            if params.get(_dest(name, f.field), spec.option_default(f.field))
            != spec.option_default(f.field)]


def build_config(params: Dict[str, Any]) -> Config:
    """Validate flag values and build the Config. Raises ConfigError with a one-line message."""
    names = set() if params["disable_defaults"] else {
        n for n, s in specs().items() if s.default_enabled
    }
    for name in specs():
        on = params.get(f"collector_{name}")
        if on is True:
            names.add(name)
        elif on is False:
            names.discard(name)
    path = params["telemetry_path"]
    if not path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path {path!r} must start with '/'")
    procfs, sysfs = params["procfs"], params["sysfs"]
    host = system.load_named(system.resolve(params["platform"]), procfs, sysfs)
    system.check(host, [n for n in specs() if params.get(f"collector_{n}") is True],
                 _given(params, host))
    names &= host.collectors
    if host.has_procfs:
        _check_root("--path.procfs", procfs, "procfs", not_a_procfs, ProcfsPathError)
        _check_root("--path.sysfs", sysfs, "sysfs", not_a_sysfs, SysfsPathError)
    options = collector_options(params)
    return Config(
        listen_addresses=tuple(parse_listen_address(a) for a in params["listen_address"]),
        telemetry_path=path,
        max_requests=params["max_requests"],
        disable_exporter_metrics=params["disable_exporter_metrics"],
        web_config_file=params["web_config_file"] or None,
        read_header_timeout=params["read_header_timeout"],
        system=host.name,
        procfs=procfs,
        sysfs=sysfs,
        collectors=frozenset(names),
        options=options,
        log_level=params["log_level"],
        log_format=params["log_format"],
    )


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(__version__, "--version", prog_name=PROG,
                      message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, /, **params: Any) -> None:
    """Prometheus exporter for what netstat and ss show.

    Every flag can also be set through an environment variable: NETSTAT_EXPORTER_ followed by
    the flag name in capitals with dots and dashes as underscores
    (--web.listen-address is NETSTAT_EXPORTER_WEB_LISTEN_ADDRESS).
    """
    ctx.obj = params
    if ctx.invoked_subcommand is not None:
        return
    config = build_config(params)
    _start_logging(params, config)
    from exporter.web.server import serve

    serve(config)


@cli.command()
@common_options
@click.pass_context
def dump(ctx: click.Context, /, **params: Any) -> None:
    """Print one scrape in the text exposition format and exit.

    Flags may stand before or after the word dump. The output suits node_exporter's textfile
    collector (write it to a temporary file and rename it into the directory).
    """
    parent: Dict[str, Any] = ctx.obj or {}
    merged = {
        k: (parent.get(k, v)
            if ctx.get_parameter_source(k) in (None, click.core.ParameterSource.DEFAULT) else v)
        for k, v in params.items()
    }
    config = build_config(merged)
    _start_logging(merged, config)
    from exporter import dump as dump_
    from exporter.scrape import Exporter

    body = dump_.render(Exporter(config).target())
    if sys.stdout is None:  # started with standard output closed (>&-)
        raise OutputError("cannot write the scrape: standard output is closed")
    try:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    except OSError as e:
        raise OutputError(f"cannot write the scrape to standard output: {e.strerror or e}"
                          ) from None


# What a write to a full disk, a closed pipe, a full quota or a dead terminal fails with.
_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EBADF}


class OutputError(Exception):
    """Standard output refused what we printed: a full disk (/dev/full), a closed pipe."""


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's final flush of what could
    not be written adds no second message."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.close(fd)
    except OSError:
        pass


def _stdout_failed() -> bool:
    """Whether standard output cannot take what is waiting in its buffer."""
    if sys.stdout is None:
        return False
    try:
        sys.stdout.flush()
        return False
    except (OSError, ValueError):
        return True


# show (states, listeners, counters, interfaces, routes, ports) and top: the same collection
# (or a running exporter's) printed as netstat would.
for _command in make_commands(local_options, build_config):
    cli.add_command(_command)


# Where to run the exporter at boot on the systems that have no Windows services.
_AT_BOOT = {"linux": "a systemd unit (deploy/systemd/netstat-exporter.service)",
            "darwin": "a launchd daemon (deploy/macos/)"}


def _service_here(action: str) -> None:
    """Refuse ``service ACTION`` off Windows, or without pywin32, in one line."""
    import importlib.util

    here = system.native()
    if here != "windows":
        raise system.PlatformError(
            f"service {action}: Windows services exist only on Windows; on {here} run the "
            f"exporter from {_AT_BOOT.get(here, 'the system service manager')}")
    if importlib.util.find_spec("win32serviceutil") is None:
        from exporter.install import install_command

        raise ConfigError(f"service {action} needs pywin32 (the windows extra): install it "
                          f"with: {install_command('pywin32')}")


@cli.group()
def service() -> None:
    """Run the exporter as a Windows service, started at boot under LocalSystem (Windows only;
    as Administrator; needs pywin32: pip install '.[windows]')."""


@service.command("install", context_settings={"ignore_unknown_options": True,
                                              "allow_interspersed_args": False})
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
def service_install(flags: Sequence[str]) -> None:
    """Register the service; it runs the exporter with FLAGS (its flags, as given to
    netstat-exporter itself, e.g. --web.listen-address=:9816), checked now."""
    _service_here("install")
    ctx = cli.make_context(PROG, list(flags))
    build_config(ctx.params)
    from exporter.windows import service as service_

    service_.install(list(flags))
    click.echo(f"{PROG}: service {service_.NAME} installed; start it with: "
               f"sc start {service_.NAME}")


@service.command("remove")
def service_remove() -> None:
    """Stop the service and unregister it."""
    _service_here("remove")
    from exporter.windows import service as service_

    service_.remove()
    click.echo(f"{PROG}: service {service_.NAME} removed")


def _fail(message: str, code: int) -> NoReturn:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from exporter.web.server import ServeError

    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name=PROG,
                      standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except click.exceptions.NoSuchOption as e:
        opt = e.option_name
        for prefix in ("--collector.", "--no-collector."):
            if opt.startswith(prefix) and "." not in opt[len(prefix):]:
                _fail(f"unknown collector {opt[len(prefix):]!r} in {opt} "
                      f"(known: {', '.join(specs())})", EXIT_USAGE)
        _fail(e.format_message(), EXIT_USAGE)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        _fail(e.format_message(), EXIT_USAGE)
    except ConfigError as e:
        _fail(str(e), EXIT_USAGE)
    except ServeError as e:
        _fail(str(e), EXIT_RUNTIME)
    except KeyboardInterrupt:
        sys.exit(130)
    except OutputError as e:
        _silence_stdout()
        _fail(str(e), EXIT_RUNTIME)
    except OSError as e:
        # click writes --help and --version itself; a write that fails there lands here. A
        # failure of anything else that could get here names its file.
        if e.filename is not None or e.errno not in _OUTPUT_ERRNOS:
            raise
        _silence_stdout()
        _fail(f"cannot write to standard output: {e.strerror or e}", EXIT_RUNTIME)
    if _stdout_failed():  # what click printed could not be flushed
        _silence_stdout()
        _fail("cannot write to standard output", EXIT_RUNTIME)


if __name__ == "__main__":
    main()

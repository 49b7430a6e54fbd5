"""The experiment CLIs' shared front: profiles as tyro subcommands, `--debug`, one-line errors.

Each profile is a tyro subcommand whose defaults are that profile's preset, so tyro parses every
flag and `--help` lists every field with the chosen profile's defaults (with no profile named:
the default profile's, followed by the list of profiles). `--profile NAME` (the documented
syntax) is the same as naming the subcommand: `profile_args` moves it to the front, where tyro
expects a subcommand; that rewrite is the only thing done to the arguments before tyro sees them.

Errors: a `dreamjax.errors.DreamjaxError` is printed as `error: <message>` on one line, with exit
code 2 for a `ConfigError` (a bad flag or run folder) and 1 for the others (a corrupt artifact, a
non-finite loss, a failing worker); `--debug` or `DREAMJAX_DEBUG=1` re-raises it with its
traceback. Any other exception is a bug and keeps its traceback; tyro's own parse errors are
tyro's.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar, Union

import tyro

from dreamjax.config import ExperimentConfig
from dreamjax.errors import ConfigError, DreamjaxError
from dreamjax.pipeline.run import preflight, run_stages

T = TypeVar("T")

DEBUG_ENV = "DREAMJAX_DEBUG"
"""Environment variable: set to 1 to see the traceback of a dreamjax error."""


@dataclasses.dataclass(frozen=True)
class Command(Generic[T]):
    """An experiment command line: the experiment's config (chosen by profile) and `--debug`."""

    config: Annotated[T, tyro.conf.arg(name="")]
    debug: bool = False
    """Show the traceback of a dreamjax error instead of its one-line message (also
    DREAMJAX_DEBUG=1)."""


def _description(factory: Callable[[], Any]) -> str:
    return " ".join((factory.__doc__ or "").split())


def profile_type(profiles: Mapping[str, Callable[[], T]], default: str) -> Any:
    """A tyro subcommand type: one subcommand per profile, defaulting to that preset."""
    if default not in profiles:
        raise ValueError(f"default profile {default!r} is not one of {list(profiles)}")
    return Union[  # noqa: UP007 (a runtime Union of Annotated types for tyro)
        tuple(
            Annotated[
                type(factory()),
                tyro.conf.subcommand(
                    name,
                    default=factory(),
                    description=_description(factory),
                    prefix_name=False,
                    is_default=name == default,
                ),
            ]
            for name, factory in profiles.items()
        )
    ]


def profile_args(argv: Sequence[str], profiles: Mapping[str, object]) -> list[str]:
    """`argv` with `--profile NAME` / `--profile=NAME` turned into the subcommand NAME in front;
    a one-line `ConfigError` for an unknown, missing or repeated profile."""
    choices = ", ".join(profiles)
    rest: list[str] = []
    named: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--profile":
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise ConfigError(f"--profile needs a value: one of {choices}")
            named.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--profile="):
            named.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    if rest and rest[0] in profiles:
        named.insert(0, rest.pop(0))
    for name in named:
        if name not in profiles:
            raise ConfigError(f"--profile: unknown profile {name!r}; choose one of {choices}")
    if len(named) > 1:
        raise ConfigError(f"--profile given {len(named)} times ({', '.join(named)}); give it once")
    return named + rest


def parse(
    profiles: Mapping[str, Callable[[], T]],
    argv: Sequence[str],
    *,
    default: str,
    prog: str,
    description: str,
) -> Command[T]:
    """Parse an experiment command line (see the module docstring)."""
    return tyro.cli(
        Command[profile_type(profiles, default)],  # type: ignore[misc]
        args=profile_args(argv, profiles),
        prog=prog,
        description=description,
        config=(tyro.conf.CascadeSubcommandArgs,),
    )


def debug_from_env() -> bool:
    """Whether DREAMJAX_DEBUG asks for tracebacks (any value but empty or 0)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def exit_code(error: DreamjaxError) -> int:
    """2 for a bad flag or run folder, 1 for a runtime failure."""
    return 2 if isinstance(error, ConfigError) else 1


def report_error(error: DreamjaxError) -> int:
    """Print `error: <message>` as one line on stderr; returns the exit code."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr, flush=True)
    return exit_code(error)


def main(
    argv: Sequence[str],
    run: Callable[[T], int],
    *,
    profiles: Mapping[str, Callable[[], T]],
    default: str,
    prog: str,
    description: str,
) -> int:
    """Parse `argv` and call `run(config)`; a dreamjax error becomes one line and an exit code
    (unless `--debug` or DREAMJAX_DEBUG asks for the traceback)."""
    debug = debug_from_env()
    try:
        command = parse(profiles, argv, default=default, prog=prog, description=description)
        debug = debug or command.debug
        return run(command.config)
    except DreamjaxError as e:
        if debug:
            raise
        return report_error(e)


def tool_main(args_type: type, body: Callable[[Any, list[str]], int],
              argv: Sequence[str] | None, *, prog: str, description: str | None) -> int:
    """A tool's CLI (`play`, `export`): tyro parses `args_type` (with a `debug` field), then
    `body(args, argv)` runs; a dreamjax error is one line `error: ...` and a non-zero exit code
    (its traceback with `--debug` or DREAMJAX_DEBUG=1)."""
    debug = debug_from_env()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = tyro.cli(args_type, args=argv, prog=prog, description=description)
        debug = debug or args.debug
        return body(args, argv)
    except DreamjaxError as e:
        if debug:
            raise
        return report_error(e)


def run_game(cfg: ExperimentConfig, game: str) -> int:
    """A game's pipeline command: check the config and the run folder (`preflight`), print the
    banner, run the requested stages, name the report. `game` is "module:NAME" of its
    `GameSpec` (e.g. "dreamjax.pipeline.doom:DOOM").

    The stage runners (and with them the model stack: flax, orbax, the game, matplotlib; about
    3 s of CPU time to import) are imported only after `preflight`, so that a bad flag or
    `--stages` subset fails within a few seconds.
    """
    todo = preflight(cfg)
    module, name = game.split(":")
    spec = getattr(importlib.import_module(module), name)
    from dreamjax.pipeline.carracing import carracing_runners, carracing_verifiers, describe
    from dreamjax.pipeline.iterate import check_game

    check_game(cfg, spec)
    print(describe(cfg, spec, pending=todo.run), flush=True)
    folder = run_stages(cfg, carracing_runners(spec), verifiers=carracing_verifiers(spec))
    if "report" in cfg.stages:
        print(f"[dreamjax] report: {folder.root / 'report.md'}")
    return 0

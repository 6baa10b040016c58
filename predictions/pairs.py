"""The pairs command: the known pairs in the registry, changed while everything runs.

    python -m predictions.pairs add BTC-EUR [SOL-EUR ...] [--ttl 30] [--refresh 10]
    python -m predictions.pairs remove BTC-EUR [...]
    python -m predictions.pairs list [--long]
    python -m predictions.pairs load FILE [--merge]

A change reaches every API process, worker and beat within about a second (see
predictions.registry). ``load`` reads one pair per line, optionally followed by its TTL
and refresh interval (``-`` for the settings'); blank lines and ``#`` comments are
skipped. Any bad pair, line or value changes nothing and is named, line by line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import redis

from predictions.infra import InvalidPair, canonical_pair, configure_logging, redact
from predictions.registry import (
    Freshness,
    InvalidFreshness,
    OwnFreshness,
    PairRegistry,
    RegistryRefused,
    seconds,
)
from predictions.settings import Settings
from predictions.wiring import make_redis

# Bad lines named one by one, at most this many (then a count of the rest).
SHOWN_ERRORS = 20


class BadInput(Exception):
    """Input the command refuses as a whole; each line of the message names one fault."""


def parse_entry(pair: str, ttl: str | None, refresh: str | None, defaults: Freshness) -> str:
    """One pair and its own freshness, checked; returns the registry's encoding."""
    own = OwnFreshness(
        seconds("ttl", ttl) if ttl not in (None, "-") else None,
        seconds("refresh", refresh) if refresh not in (None, "-") else None,
    )
    own.resolve(defaults)
    return own.encode()


def parse_lines(lines: Iterable[str], defaults: Freshness) -> dict[str, str]:
    """The pairs of a file: ``PAIR [TTL [REFRESH]]`` a line; BadInput names each bad one."""
    entries: dict[str, str] = {}
    errors: list[str] = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            if len(fields) > 3:
                raise ValueError(f"expected PAIR [TTL [REFRESH]], got {len(fields)} columns")
            pair = canonical_pair(fields[0])
            ttl, refresh = [*fields[1:], None, None][:2]
            entries[pair] = parse_entry(pair, ttl, refresh, defaults)
        except (InvalidPair, InvalidFreshness, ValueError) as exc:
            errors.append(f"line {number}: {exc}")
    if errors:
        shown = errors[:SHOWN_ERRORS]
        if len(errors) > SHOWN_ERRORS:
            shown.append(f"... and {len(errors) - SHOWN_ERRORS} more bad lines")
        raise BadInput("\n".join(shown))
    return entries


def canonical_pairs(texts: Sequence[str]) -> list[str]:
    pairs, errors = [], []
    for text in texts:
        try:
            pairs.append(canonical_pair(text))
        except InvalidPair as exc:
            errors.append(str(exc))
    if errors:
        raise BadInput("\n".join(errors))
    return list(dict.fromkeys(pairs))


def run(args: argparse.Namespace, settings: Settings, registry: PairRegistry) -> str:
    """Do what the arguments say; returns what to print."""
    defaults = Freshness(settings.prediction_ttl_seconds, settings.refresh_interval_seconds)
    if args.action == "list":
        snapshot = registry.read()
        if snapshot.generation is None:
            return "\n".join(settings.pairs)  # nothing written yet: what PAIRS says
        ordered = sorted(snapshot.entries)
        if not args.long:
            return "\n".join(ordered)
        return "\n".join(_long_line(pair, snapshot.entries[pair], defaults) for pair in ordered)
    # Each change first checks its input, then starts from what PAIRS says (a registry
    # never written is seeded), so that bad input writes nothing at all.
    if args.action == "add":
        pairs = canonical_pairs(args.pairs)
        try:
            own = parse_entry(pairs[0], args.ttl, args.refresh, defaults)
        except InvalidFreshness as exc:
            raise BadInput(str(exc)) from None
        _seed_if_unwritten(registry, settings)
        new, total = registry.add(dict.fromkeys(pairs, own))
        return f"{new} added, {len(pairs) - new} updated; {total} known pairs"
    if args.action == "remove":
        pairs = canonical_pairs(args.pairs)
        _seed_if_unwritten(registry, settings)
        registry.remove(pairs)
        return f"{len(pairs)} removed; their predictions expire on their own"
    text = sys.stdin.read() if args.file == "-" else _read(args.file)
    entries = parse_lines(text.splitlines(), defaults)
    if not entries:
        raise BadInput(f"no pairs in {args.file}; nothing was written (remove takes pairs away)")
    _seed_if_unwritten(registry, settings)
    if args.merge:
        new, total = registry.add(entries)
        return f"{new} added, {len(entries) - new} updated; {total} known pairs"
    added, removed = registry.replace(entries)
    return f"{len(entries)} known pairs: {added} added, {removed} removed"


def _seed_if_unwritten(registry: PairRegistry, settings: Settings) -> None:
    if registry.generation() is None:
        registry.seed(settings.pairs)


def _long_line(pair: str, own: str, defaults: Freshness) -> str:
    try:
        freshness = OwnFreshness.decode(own).resolve(defaults)
    except InvalidFreshness:
        freshness = defaults
    mark = "" if own else "  (the settings')"
    return f"{pair}  ttl={freshness.ttl_seconds:g}  refresh={freshness.refresh_seconds:g}{mark}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m predictions.pairs",
        description="The known pairs: every API process and worker follows a change "
        "within about a second.",
    )
    actions = top.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add pairs, or change their freshness")
    add.add_argument("pairs", nargs="+", metavar="PAIR")
    add.add_argument("--ttl", help="seconds fresh (default: PREDICTION_TTL_SECONDS)")
    add.add_argument(
        "--refresh", help="seconds between refreshes (default: REFRESH_INTERVAL_SECONDS)"
    )
    remove = actions.add_parser("remove", help="remove pairs (their predictions expire)")
    remove.add_argument("pairs", nargs="+", metavar="PAIR")
    listing = actions.add_parser("list", help="the known pairs, one per line")
    listing.add_argument("--long", action="store_true", help="with each pair's freshness")
    load = actions.add_parser(
        "load", help="make the known pairs a file's (PAIR [TTL [REFRESH]] a line)"
    )
    load.add_argument("file", help="the file, or - for standard input")
    load.add_argument("--merge", action="store_true", help="add the file's pairs, keep the others")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging("WARNING", settings.log_format)
    client = make_redis(settings, client_name="prediction-cache-pairs")
    try:
        print(run(args, settings, PairRegistry(client, settings.registry_max_pairs)))
        sys.stdout.flush()
    except BrokenPipeError:  # `list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (BadInput, RegistryRefused) as exc:
        print(f"pairs {args.action}: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        where = redact(settings.redis_url)
        hint = ""
        if "permission" in str(exc).lower():  # NOPERM: the API's least-privilege user
            hint = " (this Redis user may not change the registry: run the command as an admin)"
        print(f"pairs {args.action}: Redis at {where}: {redact(str(exc))}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

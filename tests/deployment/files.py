"""The deployment files, read by their own tools' rules: shared by tests/deployment.

The Dockerfile is parsed by dockerfile-parse (continuations, comments, JSON and shell
forms, as Docker reads them), the nginx config by crossplane (nginx's own grammar), and
the Makefile by GNU make itself: no maintained Python library parses Makefiles, and
`make -n` prints exactly the recipes make would run, expanded. Only .dockerignore's
matching is our own, small and tested by its examples in test_deployment.py.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import crossplane
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]

SECRET_PATTERNS = {
    "a password, secret, token or key assigned a value": re.compile(
        r"(?i)\w*(passw(or)?d|secret|token|api_?key|access_?key)\w*[ \t]*[=:][ \t]*[^\s\[{]"
    ),
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "credentials in a URL": re.compile(r"://[^/\s:@]*:[^/\s@]+@"),
    "a Redis password on the command line": re.compile(r"--requirepass\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


def make_run_commands() -> dict[str, list[str]]:
    """What each process of `make run` runs, as argv (scripts/run.py)."""
    from scripts.run import COMMANDS

    return {name: list(argv) for name, argv in COMMANDS.items()}


# --- Dockerfile -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]  # in order, comments left out
    env: dict[str, str]  # what the ENV instructions set, as Docker substitutes them


def read_dockerfile(path: Path) -> Dockerfile:
    # fileobj, not path: given a path, dockerfile-parse may create or write the file.
    with path.open("rb") as file:
        parser = DockerfileParser(fileobj=file)
        structure: list[dict[str, Any]] = parser.structure
        env: dict[str, str] = dict(parser.envs)
    instructions = [
        Instruction(str(item["instruction"]).upper(), str(item["value"]).strip())
        for item in structure
        if item["instruction"] != "COMMENT"
    ]
    return Dockerfile(instructions, env)


def copy_sources(instruction: Instruction) -> list[str]:
    """The source paths of a COPY instruction, without flags such as --chown."""
    if instruction.value.startswith("["):
        parts = json.loads(instruction.value)
    else:
        parts = [part for part in shlex.split(instruction.value) if not part.startswith("--")]
    return [part.rstrip("/") for part in parts[:-1]]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's ``patterns`` keep ``path`` out of the build context."""
    parts = path.split("/")
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        for end in range(1, len(parts) + 1):
            prefix = "/".join(parts[:end])
            if pattern.startswith("**/"):
                suffixes = ("/".join(parts[start:end]) for start in range(end))
                hit = any(fnmatch.fnmatchcase(s, pattern[3:]) for s in suffixes)
            else:
                hit = fnmatch.fnmatchcase(prefix, pattern)
            if hit:
                ignored = not negate
                break
    return ignored


# --- Makefile -------------------------------------------------------------------------


def _make(*args: str) -> str:
    # -n: print, never run; -B: as if every target were out of date, so the recipes of
    # every prerequisite print whatever this checkout's .venv holds.
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(ROOT), *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def make_recipes(target: str) -> list[str]:
    """The command lines `make target` runs, its prerequisites' included, expanded."""
    return _make("-n", "-B", target).splitlines()


def make_variable(name: str) -> str:
    """A variable of the Makefile, as make expands it."""
    return _make("--eval", "print-variable-%: ; @echo $($*)", f"print-variable-{name}").strip()


# --- nginx ----------------------------------------------------------------------------


def render_template(text: str, env: dict[str, str]) -> str:
    """What the nginx image's envsubst makes of a template: ${NAME} filled from env."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], m[0]), text)


def nginx_directives(conf_d: str, directory: Path) -> list[list[str]]:
    """Every directive of a conf.d file (what the nginx image includes in its http
    block), nested blocks included, as its name and words. Checked by crossplane against
    nginx's own contexts and argument counts, so it is written as nginx would read it:
    inside ``http``, in a main config file of ``directory``."""
    main = directory / "nginx.conf"
    main.write_text(f"events {{}}\nhttp {{\n{conf_d}\n}}\n")
    parsed = crossplane.parse(
        str(main), single=True, comments=False, check_ctx=True, check_args=True
    )
    assert parsed["status"] == "ok", parsed["errors"]
    found: list[list[str]] = []

    def walk(block: list[dict[str, Any]]) -> None:
        for directive in block:
            found.append([directive["directive"], *directive["args"]])
            walk(directive.get("block", []))

    http = [d for d in parsed["config"][0]["parsed"] if d["directive"] == "http"]
    walk(http[0]["block"])
    return found

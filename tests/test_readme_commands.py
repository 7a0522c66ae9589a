"""Every command README.md and cluster/README.md show (`brainomni CMD ...`, `python
pipelines/X.py ...`, `torchrun ... -m brainomni CMD ...`, `sbatch cluster/slurm/....sbatch ...`)
names a command that exists, and every option it names is a current option of that command
(not a deprecated spelling). In-process: each command's parser is built, nothing runs."""

from __future__ import annotations

import argparse
import importlib.util
import re

import pytest

from brainomni.cli import _COMMANDS, _EVALUATE, build_parser
from tests.conftest import ROOT

READMES = [ROOT / "README.md", ROOT / "cluster" / "README.md"]
PROG = re.compile(
    r"(?:(?:^|\s)\S*python\S*\s+(?P<script>pipelines/\w+\.py)|"
    r"(?:^|\s)cluster/slurm/(?P<sbatch>[\w-]+)\.sbatch|"
    r"(?:^|&&\s*|;\s*|--\s+|-m\s+)brainomni)\s+(?P<rest>\S.*)$"
)
WORD = re.compile(r"[a-z][a-z-]*$")  # a command; `brainomni CMD`, `brainomni ...` are placeholders
SBATCH = {
    "ray-ingest": "pipelines/ingest.py",
    "ray-pack": "pipelines/pack.py",
    "ray-tokenize": "pipelines/tokenize_shards.py",
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _snippets(text: str) -> list[str]:
    """Code lines (fenced or indented blocks, continuations joined) and inline code spans."""
    out, fenced, buf = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            buf += " " + line.strip().rstrip("\\")
            if not line.rstrip().endswith("\\"):
                out.append(buf.strip())
                buf = ""
        else:
            out += re.findall(r"`([^`\n]+)`", line)
    return out


def _command_of_script(path: str) -> str:
    spec = importlib.util.spec_from_file_location(f"readme_{path[10:-3]}", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, "COMMAND", None)


def _commands() -> list[tuple[str, str, list[str]]]:
    """(where, command path such as "evaluate recon", the options it names)."""
    found = []
    for readme in READMES:
        for snippet in _snippets(readme.read_text()):
            code = snippet.split(" # ")[0]
            m = PROG.search(code)
            if not m:
                continue
            rest = m["rest"].split()
            script = SBATCH.get(m["sbatch"], m["script"]) if m["sbatch"] != "pretrain" else None
            if m["sbatch"] == "pretrain":
                cmd = ["pretrain"]
            elif script:
                one = _command_of_script(script)
                cmd = [one] if one else rest[:1]
            else:
                cmd = rest[:1]
            if cmd == ["evaluate"]:
                cmd = rest[:2]
            if not all(WORD.match(w) for w in cmd):
                continue
            options = OPTION.findall(m["rest"])
            found.append((f"{readme.name}: {snippet}", " ".join(cmd), options))
    return found


COMMANDS = _commands()


def _leaf(cmd: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = parser
    for word in cmd.split():
        (action,) = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        assert word in action.choices, f"{cmd!r}: no command {word!r}"
        sub = action.choices[word]
    return sub


def test_the_readmes_show_every_command():
    build_parser()  # registers the plugins
    shown = {c for _, c, _ in COMMANDS}
    wanted = set(_COMMANDS) - {"evaluate"} | {f"evaluate {e}" for e in _EVALUATE}
    assert wanted <= shown, sorted(wanted - shown)


@pytest.mark.parametrize(("where", "cmd", "options"), COMMANDS, ids=[c[0][:90] for c in COMMANDS])
def test_readme_command_and_its_options_exist(where, cmd, options):
    parser = _leaf(cmd)
    assert "usage" in parser.format_help()
    current = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
    unknown = sorted(set(options) - current - {"--help"})
    assert not unknown, f"{where}\n  options {unknown} are not options of `brainomni {cmd}`"

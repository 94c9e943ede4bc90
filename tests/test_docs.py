"""What the README, docs/, the flag files and the code's docstrings name exists: every path, module,
script and flag, so the prose cannot drift from the code unnoticed. A name the docs keep as history
is in `RETIRED`, with the words each doc that names it must give for where it went."""

import ast
import pathlib
import re

import pytest
from conftest import ROOT

ROOT_PATH = pathlib.Path(ROOT)
OUR_DIRECTORIES = ("diy_lstm", "tasks", "docs", "experiments", "benchmarks", "tests", "notebooks")
PATH = re.compile(
    rf"(?<![\w./<>$-])((?:{'|'.join(OUR_DIRECTORIES)})/[\w./-]*[\w/]|[\w-]+\.(?:py|md|flags|ipynb))(?![\w*<>(])"
)
MODULE = re.compile(rf"python -m ((?:{'|'.join(OUR_DIRECTORIES)})[\w.]*\w)")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]+)(?![\w\[…])")  # not a placeholder: --name[=value], --xxxx…
DEFINED_FLAG = re.compile(r'(?:DEFINE_\w+|_model_flag)\(\s*"([a-z0-9_]+)"')  # (flags.py defines model flags by field)
ABSL_FLAGS = {"flagfile", "helpfull", "help", "helpshort", "undefok"}
# name -> what every doc that names it says of where it went (a commit, or its new name).
RETIRED = {
    "--sample_distribution": "today's `--sampling`",
    "--readout_l1": "2c69c80",
    "--readout_l1_epochs": "2c69c80",
    "--noise_free_sampling": "2c69c80",
    "--noise_free_learning_rate": "2c69c80",
    "experiments/count_far.flags": "604a60a",
    "experiments/generalize.flags": "604a60a",
}


def source_files() -> list[pathlib.Path]:
    return [
        path
        for path in sorted(ROOT_PATH.rglob("*.py"))
        if not {".git", "logs", "tests"} & set(path.relative_to(ROOT_PATH).parts)
    ]


def prose() -> dict[str, str]:
    """Each document's text: README.md, docs/*.md, the flag files, and every docstring of the code."""
    texts = {path.name: path.read_text() for path in [ROOT_PATH / "README.md", *sorted(ROOT_PATH.glob("docs/*.md"))]}
    texts.update({f"experiments/{p.name}": p.read_text() for p in sorted(ROOT_PATH.glob("experiments/*.flags"))})
    for path in source_files():
        tree = ast.parse(path.read_text())
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef)))]
        texts[str(path.relative_to(ROOT_PATH))] = "\n".join(filter(None, map(ast.get_docstring, nodes)))
    return texts


def defined_flags() -> set[str]:
    names = set(ABSL_FLAGS)
    for path in source_files():
        names.update(DEFINED_FLAG.findall(path.read_text()))
    return names


def exists(path: str, file_names: set[str]) -> bool:
    return (ROOT_PATH / path).exists() if "/" in path else path in file_names


def named(texts: dict[str, str]) -> list[tuple[str, str]]:
    """`(document, name)` for every path, `python -m` module, `python X.py` script and flag named."""
    found = []
    for document, text in texts.items():
        found += [(document, path.rstrip(".")) for path in PATH.findall(text)]
        found += [(document, "module " + module) for module in MODULE.findall(text)]
        found += [(document, "--" + flag) for flag in FLAG.findall(text)]
    return found


def missing(texts: dict[str, str]) -> list[str]:
    file_names = {path.name for path in ROOT_PATH.rglob("*") if ".git" not in path.parts}
    flags = defined_flags()
    problems = []
    for document, name in named(texts):
        if name in RETIRED:
            if RETIRED[name] not in texts[document]:
                problems.append(f"{document}: {name} is retired; say where it went ({RETIRED[name]!r})")
        elif name.startswith("module "):
            module = ROOT_PATH / name.split()[1].replace(".", "/")
            if not (module.with_suffix(".py").exists() or (module / "__main__.py").exists()):
                problems.append(f"{document}: no module {name.split()[1]}")
        elif name.startswith("--"):
            flag = name[2:]
            if flag not in flags and not (flag.startswith("no") and flag[2:] in flags):
                problems.append(f"{document}: no flag {name}")
        elif not exists(name, file_names):
            problems.append(f"{document}: no file {name}")
    return sorted(set(problems))


def test_every_path_module_and_flag_the_docs_name_exists():
    assert missing(prose()) == []


def test_a_retired_name_is_gone_from_the_code():
    flags, file_names = defined_flags(), {path.name for path in ROOT_PATH.rglob("*")}
    for name in RETIRED:
        assert (name[2:] not in flags) if name.startswith("--") else not exists(name, file_names), name


@pytest.mark.parametrize(
    "text, problem",
    [
        ("see `docs/nothing.md`", "no file docs/nothing.md"),
        ("`python -m tasks.counter.nothing`", "no module tasks.counter.nothing"),
        ("`python train.py --no_such_flag=3`", "no flag --no_such_flag"),
        ("was `--readout_l1`", "--readout_l1 is retired"),
        ("`nothing_here.flags`", "no file nothing_here.flags"),
    ],
)
def test_the_check_finds_a_name_that_does_not_exist(text, problem):
    problems = missing({"doc.md": text})
    assert len(problems) == 1 and problem in problems[0]


def test_the_check_passes_what_exists():
    assert (
        missing({"doc.md": "`python -m tasks.counter.score --model_dir=M`, `diy_lstm/cell.py`, `--noinline_loops`"})
        == []
    )

"""A catalogue of bad inputs, each with the exact message a person gets.

CLI cases run ``laco`` in process: exit 2, exactly one ``laco: error: <message>`` line, no
traceback. API cases go through gradio_client to the real app: the message arrives as the
``AppError``, and a good request from another session is answered right after each one.
Adding a case is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from laco_core.arch.adapters import supported
from laco_core.cli import main
from laco_core.runtime.comparison import POINTS
from tests.helpers import compare_args
from tests.reliability.common import PROMPTS, TEXT, build, load_tiny

SUPPORTED = supported()
# model files that cannot be read: what is wrong, after "Cannot read the model '<path>': "
UNREADABLE = {
    "corrupt": "its safetensors weights are corrupt or truncated; export or download it again.",
    "trunc": "its safetensors weights are corrupt or truncated; export or download it again.",
    "garbage_gguf": "it is not a GGUF file (no GGUF magic bytes at its start).",
    "v99_gguf": "it is GGUF version 99, which is not supported (versions 2 and 3 are).",
    "badcfg": "its config.json is not valid JSON.",
}


def unreadable(name: str):
    """The message for the session file ``f.<name>`` given as a model (one of ``UNREADABLE``)."""
    return lambda f: f"Cannot read the model '{getattr(f, name)}': {UNREADABLE[name]}"


def remote_code(f) -> str:
    return (
        f"'{f.remote}' needs its own Python code (auto_map in its config): remote code "
        f"is not run here. Supported architectures: {SUPPORTED}."
    )


def over(what: str, amount: str, limit: str, env: str):
    """The message for a value over a limit (``{env}`` raises it)."""
    return lambda f: (
        f"{what}: {amount}, over the limit of {limit} ({env} raises it on a self-hosted instance)."
    )


# ---- CLI -------------------------------------------------------------------------------------


@dataclass
class Cli:
    """``argv`` and the message, both as functions of the session's files ``f``."""

    name: str
    argv: object  # (f) -> list[str]
    message: object  # (f) -> str


def _out(f, name: str = "out") -> str:
    return str(f.root / "outs" / name)


def _laco(f, command: str, *flags: str, out: bool = False) -> list[str]:
    """``laco COMMAND --model <the tiny model> FLAGS``, with ``--out`` a fresh folder if ``out``."""
    return [command, "--model", str(f.tiny), *flags, *(("--out", _out(f)) if out else ())]


def _prune(f, *flags: str) -> list[str]:
    return _laco(f, "prune", "--ratio", "0.2", *flags, out=True)


def _collapse(f, *flags: str) -> list[str]:
    return _laco(f, "collapse", "--merge", "1-2", *flags, out=True)


def _compare(f, *flags: str) -> list[str]:
    return _laco(f, "compare", "--ratios", "0.2", "--methods", "shortgpt", *flags)


def _sample(f, *flags: str) -> list[str]:
    return _laco(f, "generate", "--prompt", "hi", "--sample", *flags)


def _output(f, command: str, flag: str, path) -> list[str]:
    """``COMMAND`` writing its ``flag`` output file to ``path`` (compare: on one cheap point)."""
    args = (flag, str(path))
    return _compare(f, *args) if command == "compare" else _laco(f, command, *args)


def unreadable_eval(label: str, name: str) -> Cli:
    """``laco eval`` on the session file ``f.<name>``, which cannot be read as a model."""
    return Cli(label, lambda f: ["eval", "--model", str(getattr(f, name))], unreadable(name))


def into_missing_folder(command: str, flag: str, name: str) -> Cli:
    """``flag`` naming a file ``name`` in the missing folder ``<root>/no``."""
    return Cli(
        f"{command} {flag} into a missing folder",
        lambda f: _output(f, command, flag, f.root / "no" / name),
        lambda f: f"{flag} '{f.root / 'no' / name}': the folder '{f.root / 'no'}' does not exist.",
    )


def onto_folder(command: str, flag: str) -> Cli:
    """``flag`` naming the folder ``<root>`` where a file is wanted."""
    return Cli(
        f"{command} {flag} onto a folder",
        lambda f: _output(f, command, flag, f.root),
        lambda f: f"{flag} '{f.root}' is a folder; give a file name.",
    )


CLI_CASES = [
    # unreadable or unusable models
    unreadable_eval("corrupt safetensors", "corrupt"),
    unreadable_eval("truncated safetensors", "trunc"),
    unreadable_eval("not a GGUF file", "garbage_gguf"),
    Cli(
        "unknown GGUF version",
        lambda f: ["generate", "--model", str(f.v99_gguf), "--prompt", "hi"],
        unreadable("v99_gguf"),
    ),
    Cli(
        "remote code config",
        lambda f: ["analyze", "--model", str(f.remote), "--json", _out(f, "a.json")],
        remote_code,
    ),
    unreadable_eval("invalid config.json", "badcfg"),
    Cli(
        "folder without config",
        lambda f: ["eval", "--model", str(f.noconfig)],
        lambda f: (
            f"'{f.noconfig}' is a directory without config.json; save models with save_pretrained."
        ),
    ),
    Cli(
        "missing model",
        lambda f: ["eval", "--model", str(f.root / "nothing-here")],
        lambda f: (
            f"Cannot load model '{f.root / 'nothing-here'}' (offline: only cached models "
            "load): not a local path and not found on the Hub."
        ),
    ),
    Cli(
        "unknown dtype",
        lambda f: _laco(f, "eval", "--dtype", "int8"),
        lambda f: "Unknown dtype 'int8'; use auto, float32, bfloat16, float16.",
    ),
    Cli(
        "unknown device",
        lambda f: _laco(f, "eval", "--device", "tpu"),
        lambda f: "Unknown device 'tpu'; use auto, cpu, cuda or mps.",
    ),
    # output paths
    Cli(
        "--out under a file",
        lambda f: _laco(f, "collapse", "--merge", "1-2", "--out", str(f.afile / "sub")),
        lambda f: f"Cannot create '{f.afile / 'sub'}': '{f.afile}' is a file.",
    ),
    Cli(
        "--out not writable",
        lambda f: _laco(f, "collapse", "--merge", "1-2", "--out", "/proc/laco-out"),
        lambda f: "Cannot write '/proc/laco-out': '/proc' is not writable.",
    ),
    Cli(
        "--out onto a file",
        lambda f: _laco(f, "prune", "--ratio", "0.2", "--out", str(f.afile)),
        lambda f: f"'{f.afile}' is a file; give a folder to export to.",
    ),
    Cli(
        "--out onto a non-empty folder",
        lambda f: _laco(f, "collapse", "--merge", "1-2", "--out", str(f.full)),
        lambda f: f"'{f.full}' exists and is not empty; choose another folder or --overwrite.",
    ),
    Cli(
        "--out onto the source model",
        lambda f: _laco(f, "collapse", "--merge", "1-2", "--out", str(f.tiny), "--overwrite"),
        lambda f: f"'{f.tiny}' is the source model's own folder; export somewhere else.",
    ),
    into_missing_folder("analyze", "--json", "a.json"),
    onto_folder("analyze", "--json"),
    into_missing_folder("eval", "--json", "m.json"),
    onto_folder("auto", "--json"),
    onto_folder("compare", "--csv"),
    into_missing_folder("compare", "--json", "c.json"),
    # input files
    Cli(
        "prune --prompts missing",
        lambda f: _prune(f, "--prompts", str(f.root / "none.txt")),
        lambda f: f"Prompts file not found: {f.root / 'none.txt'}",
    ),
    Cli(
        "prune --prompts binary",
        lambda f: _prune(f, "--prompts", str(f.binary)),
        lambda f: f"Prompts file '{f.binary}' is not UTF-8 text.",
    ),
    Cli(
        "prune --prompts without prompts",
        lambda f: _prune(f, "--prompts", str(f.empty)),
        lambda f: f"No prompts in '{f.empty}': write one prompt per line.",
    ),
    Cli(
        "heal --text binary",
        lambda f: _laco(f, "heal", "--text", str(f.binary), "--out", _out(f)),
        lambda f: f"Training text '{f.binary}' is not UTF-8 text.",
    ),
    Cli(
        "heal --text latin-1",
        lambda f: _laco(f, "heal", "--text", str(f.latin1), "--out", _out(f)),
        lambda f: f"Training text '{f.latin1}' is not UTF-8 text.",
    ),
    Cli(
        "eval --text binary",
        lambda f: _laco(f, "eval", "--text", str(f.binary)),
        lambda f: f"Text file '{f.binary}' is not UTF-8 text.",
    ),
    Cli(
        "rebuild a binary file",
        lambda f: ["rebuild", str(f.binary), "--out", _out(f)],
        lambda f: "'binary.txt' is not a JSON recipe (UnicodeDecodeError).",
    ),
    # sampling and numbers
    Cli(
        "--top-p 0",
        lambda f: _sample(f, "--top-p", "0"),
        lambda f: "The top-p must be in (0, 1], not 0.",
    ),
    Cli(
        "--top-k -3",
        lambda f: _sample(f, "--top-k", "-3"),
        lambda f: "top-k must be 0 (off) or a positive number, not -3.",
    ),
    Cli(
        "--temperature -1",
        lambda f: _sample(f, "--temperature", "-1"),
        lambda f: "The temperature must be in (0, 10], not -1.",
    ),
    Cli(
        "prune --seq-len 0",
        lambda f: _prune(f, "--seq-len", "0"),
        lambda f: "argument --seq-len: 0 must be at least 1",
    ),
    Cli(
        "eval --seq-len 0",
        lambda f: _laco(f, "eval", "--seq-len", "0"),
        lambda f: "--seq-len must be at least 2 (got 0).",
    ),
    Cli(
        "heal --lr nan",
        lambda f: _laco(f, "heal", "--lr", "nan", "--out", _out(f)),
        lambda f: "heal: lr must be a finite number, not nan.",
    ),
    Cli(
        "prune --ratio 1.5",
        lambda f: _laco(f, "prune", "--method", "shortgpt", "--ratio", "1.5", out=True),
        lambda f: "argument --ratio: 1.5 must be between 0 and 1 (exclusive)",
    ),
    Cli(
        "prune --ratio 0",
        lambda f: _laco(f, "prune", "--method", "shortgpt", "--ratio", "0", out=True),
        lambda f: "argument --ratio: 0 must be between 0 and 1 (exclusive)",
    ),
    Cli(
        "prune angular --ratio -1",
        lambda f: _laco(f, "prune", "--method", "angular", "--ratio", "-1", out=True),
        lambda f: "argument --ratio: -1 must be between 0 and 1 (exclusive)",
    ),
    Cli(
        "prune --layers 5-2",
        lambda f: _prune(f, "--layers", "5-2"),
        lambda f: "Layer range 5-2 is outside 0-6 (half-open LO-HI, LO < HI).",
    ),
    Cli(
        "auto -T 5",
        lambda f: _laco(f, "auto", "-T", "5"),
        lambda f: "--threshold 5.0 is outside [0, 1]: every score lies in (0, 1].",
    ),
    Cli(
        "auto -T nan with a target",
        lambda f: _laco(f, "auto", "-T", "nan", "--target-layers", "2"),
        lambda f: "--threshold must be a number between 0 and 1.",
    ),
    Cli(
        "auto -C 99",
        lambda f: _laco(f, "auto", "-C", "99"),
        lambda f: "--merge-count must be between 2 and 6 (the model's layers).",
    ),
    Cli(
        "auto --target-ratio 2",
        lambda f: _laco(f, "auto", "--target-ratio", "2"),
        lambda f: "--target-ratio is a fraction of parameters removed: use 0 < R < 1, e.g. 0.2.",
    ),
    Cli(
        "auto --workers 0",
        lambda f: _laco(f, "auto", "--workers", "0"),
        lambda f: "argument --workers: 0 must be at least 1",
    ),
    Cli(
        "collapse --alpha 5",
        lambda f: _collapse(f, "--method", "rdsc_calibrated", "--alpha", "5"),
        lambda f: "rdsc_calibrated: alpha must be a number in [0, 1], not '5'.",
    ),
    Cli(
        "collapse --ridge -1",
        lambda f: _collapse(f, "--method", "drop_lsq", "--ridge", "-1"),
        lambda f: "drop_lsq: ridge must be a number in [0, 1e+06] or auto, not '-1'.",
    ),
    Cli(
        "collapse --merge=-1-2",
        lambda f: _laco(f, "collapse", "--merge=-1-2", "--out", _out(f)),
        lambda f: "Cannot read range '-1-2': write LO-HI with layer numbers ≥ 0, e.g. 20-23.",
    ),
    Cli(
        "collapse --merge 3-1",
        lambda f: _laco(f, "collapse", "--merge", "3-1", "--out", _out(f)),
        lambda f: "Range 3-1 has LO > HI.",
    ),
    Cli(
        "collapse --merge 4-99",
        lambda f: _laco(f, "collapse", "--merge", "4-99", "--out", _out(f)),
        lambda f: "Range 4-99 is outside the model's layers 0-5.",
    ),
    Cli(
        "compare --eval-windows -1",
        lambda f: _compare(f, "--eval-windows", "-1"),
        lambda f: "--eval-windows must be 0 (all) or more (got -1).",
    ),
    Cli(
        "compare --ratios 2",
        lambda f: _laco(f, "compare", "--ratios", "2", "--methods", "shortgpt"),
        lambda f: "Ratios must be fractions between 0 and 1, e.g. 0.1,0.2,0.3.",
    ),
    Cli(
        "compare --methods foo",
        lambda f: _laco(f, "compare", "--ratios", "0.2", "--methods", "foo"),
        lambda f: f"Unknown method(s) ['foo']; choose from: {', '.join(POINTS)}.",
    ),
    # limits
    Cli(
        "auto with a 1 MB prompt line",
        lambda f: _laco(f, "auto", "--prompts", str(f.huge_line)),
        over("A calibration prompt (at least)", "32,812 tokens", "4,096", "LACO_MAX_PROMPT_TOKENS"),
    ),
    Cli(
        "generate with a 100k-character prompt",
        lambda f: _laco(f, "generate", "--prompt", "x" * 100_000),
        over("--prompt", "100,000 tokens", "4,096", "LACO_MAX_PROMPT_TOKENS"),
    ),
    Cli(
        "generate --max-new-tokens 10^8",
        lambda f: _laco(f, "generate", "--prompt", "hi", "--max-new-tokens", "100000000"),
        over("--max-new-tokens", "100,000,000 tokens", "1,024", "LACO_MAX_NEW_TOKENS"),
    ),
    Cli(
        "heal --steps 10^8",
        lambda f: _laco(f, "heal", "--steps", "100000000", "--out", _out(f)),
        over("--steps", "100,000,000 steps", "5,000", "LACO_MAX_HEAL_STEPS"),
    ),
    Cli(
        "eval --seq-len 10^5",
        lambda f: _laco(f, "eval", "--seq-len", "100000"),
        over("--seq-len", "100,000 tokens", "4,096", "LACO_MAX_SEQ_LEN"),
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(case, files, capsys, one_thread):
    code = main(case.argv(files))
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert err.count("laco: error:") == 1
    assert err.strip().splitlines()[-1] == f"laco: error: {case.message(files)}"


# ---- API -------------------------------------------------------------------------------------


@dataclass
class Api:
    """A request from one kind of session and the exact message it gets.

    ``session``: ``fresh`` (nothing loaded), ``loaded`` (the tiny model loaded) or ``built``
    (loaded, and layers 1-2 collapsed: ``{did}`` in ``args`` is that build's id).
    """

    name: str
    session: str
    endpoint: str
    args: object  # (f, did) -> tuple
    message: object  # (f) -> str


def _auto(prompts=PROMPTS, c=2, low=1, high=0, interval=2, t=0.5, target=0):
    return (prompts, c, low, high, interval, t, "official", "cosine", "paper", target)


BIG = "x" * 100_000
API_CASES = [
    Api(
        "corrupt folder",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.corrupt), "float32", "cpu"),
        unreadable("corrupt"),
    ),
    Api(
        "truncated weights",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.trunc), "float32", "cpu"),
        unreadable("trunc"),
    ),
    Api(
        "garbage .gguf",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.garbage_gguf), "float32", "cpu"),
        unreadable("garbage_gguf"),
    ),
    Api(
        "GGUF v99",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.v99_gguf), "float32", "cpu"),
        unreadable("v99_gguf"),
    ),
    Api(
        "auto_map config",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.remote), "float32", "cpu"),
        remote_code,
    ),
    Api(
        "invalid config.json",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.badcfg), "float32", "cpu"),
        unreadable("badcfg"),
    ),
    Api(
        "plain file as model",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.afile), "float32", "cpu"),
        lambda f: f"'{f.afile}' is a file but not a .gguf model; give a directory or a .gguf file.",
    ),
    Api(
        "unknown dtype",
        "loaded",
        "/load_model",
        lambda f, d: (str(f.tiny), "int8", "cpu"),
        lambda f: (
            "Value: int8 is not in the list of choices: ['auto', 'float32', 'bfloat16', 'float16']"
        ),
    ),
    Api(
        "analyze without prompts",
        "loaded",
        "/analyze",
        lambda f, d: ("  \n ", "all", "cosine"),
        lambda f: "Add at least one calibration prompt (one per line).",
    ),
    Api(
        "analyze 2,000 prompts",
        "loaded",
        "/analyze",
        lambda f, d: ("\n".join(f"prompt {i}" for i in range(2000)), "all", "cosine"),
        over("Calibration prompts", "2,000 prompts", "512", "LACO_MAX_PROMPTS"),
    ),
    Api(
        "analyze a 100k-character prompt",
        "loaded",
        "/analyze",
        lambda f, d: (BIG, "all", "cosine"),
        over("A calibration prompt", "100,000 tokens", "4,096", "LACO_MAX_PROMPT_TOKENS"),
    ),
    Api(
        "range LO > HI",
        "loaded",
        "/collapse",
        lambda f, d: ("23-20", "official", PROMPTS),
        lambda f: "Range 23-20 has LO > HI.",
    ),
    Api(
        "range -1-2",
        "loaded",
        "/collapse",
        lambda f, d: ("-1-2", "official", PROMPTS),
        lambda f: "Cannot read range '-1-2': write LO-HI with layer numbers ≥ 0, e.g. 20-23.",
    ),
    Api(
        "range outside the model",
        "loaded",
        "/collapse",
        lambda f, d: ("4-99", "official", PROMPTS),
        lambda f: "Range 4-99 is outside the model's layers 0-5.",
    ),
    Api(
        "overlapping ranges",
        "loaded",
        "/collapse",
        lambda f, d: ("1-3, 2-4", "official", PROMPTS),
        lambda f: "Ranges 1-3 and 2-4 overlap.",
    ),
    Api(
        "empty plan",
        "loaded",
        "/collapse",
        lambda f, d: ("", "official", PROMPTS),
        lambda f: "The plan is empty: add at least one range LO-HI.",
    ),
    Api(
        "one-layer range",
        "loaded",
        "/collapse",
        lambda f, d: ("3-3", "official", PROMPTS),
        lambda f: "Range 3-3 covers one layer; a merge needs at least two.",
    ),
    Api(
        "alpha 5",
        "loaded",
        "/collapse",
        lambda f, d: ("1-2", "rdsc_calibrated", PROMPTS, "5", "", "", "", False, 6, "auto"),
        lambda f: "rdsc_calibrated: alpha must be a number in [0, 1], not '5'.",
    ),
    Api(
        "ridge -1",
        "loaded",
        "/collapse",
        lambda f, d: ("1-2", "drop_lsq", PROMPTS, "", "", "", "", False, 6, "-1"),
        lambda f: "drop_lsq: ridge must be a number in [0, 1e+06] or auto, not '-1'.",
    ),
    Api(
        "compare without a build",
        "fresh",
        "/compare",
        lambda f, d: compare_args(None),
        lambda f: "No collapsed model yet: build one in the Collapse tab first.",
    ),
    Api(
        "compare an unknown id",
        "built",
        "/compare",
        lambda f, d: compare_args("collapse-999"),
        lambda f: "Unknown model id 'collapse-999': build or load one first.",
    ),
    Api(
        "compare top-p 0",
        "built",
        "/compare",
        lambda f, d: compare_args(d, sample=True, top_p=0.0),
        lambda f: "Value 0.0 is less than minimum value 0.05.",
    ),
    Api(
        "compare top-k -3",
        "built",
        "/compare",
        lambda f, d: compare_args(d, sample=True, top_k=-3),
        lambda f: "Value -3 is less than minimum value 0.",
    ),
    Api(
        "compare temperature -1",
        "built",
        "/compare",
        lambda f, d: compare_args(d, sample=True, temp=-1),
        lambda f: "Value -1 is less than minimum value 0.05.",
    ),
    Api(
        "compare 100,000 new tokens",
        "built",
        "/compare",
        lambda f, d: compare_args(d, new=100_000),
        lambda f: "Value 100000 is greater than maximum value 512.",
    ),
    Api(
        "generate from a 100k-character prompt",
        "built",
        "/compare",
        lambda f, d: compare_args(d, prompt=BIG),
        over("A compare prompt", "100,000 tokens", "4,096", "LACO_MAX_PROMPT_TOKENS"),
    ),
    Api(
        "compare an empty prompt",
        "built",
        "/compare",
        lambda f, d: compare_args(d, prompt="   "),
        lambda f: "The prompt is empty; type something to generate from.",
    ),
    Api(
        "compare repetition penalty 0.5",
        "built",
        "/compare",
        lambda f, d: compare_args(d, rep=0.5),
        lambda f: "Value 0.5 is less than minimum value 1.0.",
    ),
    Api(
        "evaluate window 100,000",
        "built",
        "/evaluate",
        lambda f, d: (d, "pasted text", TEXT, None, 100_000, 0),
        lambda f: "Value 100000 is greater than maximum value 1024.",
    ),
    Api(
        "evaluate a too short text",
        "built",
        "/evaluate",
        lambda f, d: (d, "pasted text", "too short", None, 64, 0),
        lambda f: "The text is too short to measure perplexity; give at least a paragraph.",
    ),
    Api(
        "evaluate a text over the limit",
        "built",
        "/evaluate",
        lambda f, d: (d, "pasted text", "word " * 20_000, None, 64, 0),
        over("The text to score", "100,000 characters", "50,000", "LACO_MAX_TEXT_CHARS"),
    ),
    Api(
        "evaluate a binary upload",
        "built",
        "/evaluate",
        lambda f, d: (d, "uploaded file", None, _file(f.binary), 64, 0),
        lambda f: "The uploaded file is not UTF-8 text.",
    ),
    Api(
        "evaluate a latin-1 upload",
        "built",
        "/evaluate",
        lambda f, d: (d, "uploaded file", None, _file(f.latin1), 64, 0),
        lambda f: "The uploaded file is not UTF-8 text.",
    ),
    Api(
        "evaluate without the upload",
        "built",
        "/evaluate",
        lambda f, d: (d, "uploaded file", None, None, 64, 0),
        lambda f: "Upload a UTF-8 .txt file first.",
    ),
    Api(
        "search T = 5",
        "loaded",
        "/auto_collapse",
        lambda f, d: _auto(t=5.0),
        lambda f: "Value 5.0 is greater than maximum value 1.0.",
    ),
    Api(
        "search C = 99",
        "loaded",
        "/auto_collapse",
        lambda f, d: _auto(c=99),
        lambda f: "--merge-count must be between 2 and 6 (the model's layers).",
    ),
    Api(
        "search a 100k-character prompt",
        "loaded",
        "/auto_collapse",
        lambda f, d: _auto(prompts=BIG),
        over("A calibration prompt", "100,000 tokens", "4,096", "LACO_MAX_PROMPT_TOKENS"),
    ),
    Api(
        "search target of 99 layers",
        "loaded",
        "/auto_collapse",
        lambda f, d: _auto(target=99),
        lambda f: "--target-layers must be between 1 and 5.",
    ),
    Api(
        "search low above high",
        "loaded",
        "/auto_collapse",
        lambda f, d: _auto(low=5, high=3),
        lambda f: "Need 0 <= low < high <= 6; got low=5, high=3.",
    ),
    Api(
        "baselines ratio 1.5",
        "loaded",
        "/baselines",
        lambda f, d: ("1.5", ["shortgpt"], 0),
        lambda f: "Ratios must be fractions between 0 and 1, e.g. 0.1,0.2,0.3.",
    ),
    Api(
        "baselines ratio abc",
        "loaded",
        "/baselines",
        lambda f, d: ("abc", ["shortgpt"], 0),
        lambda f: "Write target ratios as numbers, e.g. 0.1, 0.2, 0.3.",
    ),
    Api(
        "baselines without methods",
        "loaded",
        "/baselines",
        lambda f, d: ("0.2", [], 0),
        lambda f: "Pick at least one method.",
    ),
    Api(
        "recipe upload of a text file",
        "loaded",
        "/load_recipe",
        lambda f, d: ([_file(f.text)],),
        lambda f: (
            "Invalid file type. Please upload a file that is one of these formats: "
            "['.json', '.safetensors']"
        ),
    ),
    Api(
        "recipe upload of invalid JSON",
        "loaded",
        "/load_recipe",
        lambda f, d: ([_file(f.root / "bad.json")],),
        lambda f: "'laco_recipe.json' is not a JSON recipe (JSONDecodeError).",
    ),
    Api(
        "export without a build",
        "fresh",
        "/export",
        lambda f, d: (None,),
        lambda f: "No collapsed model yet: build one in the Collapse tab first.",
    ),
    Api(
        "push to a bad repo id",
        "built",
        "/push_to_hub",
        lambda f, d: (d, "norepo", "hf_x", True),
        lambda f: "Give a Hub repo id like your-name/smollm2-collapsed.",
    ),
    Api(
        "push without a token",
        "built",
        "/push_to_hub",
        lambda f, d: (d, "me/repo", "", True),
        lambda f: "Paste a Hugging Face write token (it is used once and not kept).",
    ),
]


def _file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


@pytest.fixture(scope="module")
def sessions(app, files):
    """One client per kind of session, made once, and one for the good request."""
    (files.root / "bad.json").write_text("{not json")
    fresh, loaded, built = app.client(), app.client(), app.client()
    load_tiny(loaded, files.tiny)
    load_tiny(built, files.tiny)
    did = build(built)["id"]
    return SimpleNamespace(fresh=fresh, loaded=loaded, built=built, did=did, good=app.client())


def call(client, endpoint: str, args: tuple):
    """Run a request to its end (streams too) and return its last output."""
    job = client.submit(*args, api_name=endpoint)
    return job.result()


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_api_bad_input_is_one_clear_message(case, sessions, files):
    from gradio_client.exceptions import AppError

    client = getattr(sessions, case.session)
    with pytest.raises(AppError) as info:
        call(client, case.endpoint, case.args(files, sessions.did))
    assert str(info.value) == case.message(files)
    # the app keeps serving: another session's good request is answered
    assert load_tiny(sessions.good, files.tiny)["layers"] == 6

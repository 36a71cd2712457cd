"""The ``run_recbole_sae.py`` command line (also installed as ``recbole-sae``).

The one place that reads the process's arguments: they are parsed here once, and what a run needs
is handed down as values (the ``--key=value`` pairs as a dict, the config's highest layer, and the
command as typed, for the run's log and lock); nothing below reads the arguments again.

``--help`` (or no argument at all) prints the usage on stdout; ``--help --model=SAERec`` adds that
model's keys with their defaults and the comments of its yaml. Every path given on the command line
(and ``$RECBOLE_SAE_DATA``) is made absolute here, against the caller's working directory
(:mod:`recbole_sae.paths`); a key nothing reads is an error (:mod:`recbole_sae.known_keys`).
``export-embeddings`` (first argument) exports SAERec's item embeddings (:func:`export_main`);
``explain`` writes a finished SAERec run's explanations again (:func:`explain_main`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from recbole_sae.errors import RecboleSAEError

USAGE = """usage: run_recbole_sae.py --model=MODEL --dataset=DATASET [--config_files=a.yaml,b.yaml] [--key=value ...]
       run_recbole_sae.py --sweep=SWEEP.yaml [--results=RESULTS.jsonl] [--key=value ...]
       run_recbole_sae.py --help [--model=MODEL] [--dataset=DATASET]
       run_recbole_sae.py export-embeddings --dataset=DATASET --out=FILE [--key=value ...]
       run_recbole_sae.py explain --run=RUN_FOLDER [--key=value ...]"""

OPTIONS = """
A run:
  --model=MODEL          a plugin model (SASRecSAE, SteerableSASRec, SAERec, SASRecPlus) or any RecBole
                         model by its class name (SASRec, BERT4Rec, GRU4Rec, ...); default SASRec
  --dataset=DATASET      ml-100k (bundled with RecBole, the default) or a folder DATASET/ of RecBole atomic
                         files, looked for in --data_path, then $RECBOLE_SAE_DATA, then ./dataset (without
                         a dataset yaml its columns are read from the files' name:type headers)
  --data_path=FOLDER     where the dataset folder is (the folder itself or its parent)
  --config_files=A,B     yaml files layered over the project's defaults, in order
  --run_name=NAME        the run folder's name under checkpoint_dir (default <model>-<dataset>-<time>);
                         the same command again continues an unfinished run there
  --resume=RUN_FOLDER    continue a killed run from its resume.pth
  --resume_every=S       also write resume.pth between validations, at an epoch's start once the last
                         is S seconds old (default 120; 0: after validations only)
  --checkpoint_dir=DIR   parent folder of the run folders (default runs)
  --seed=N --epochs=N    and any other config key: --key=value overrides it (--help --model=MODEL lists
                         the keys of a model); a key nothing reads is an error
  --threads=N            torch CPU threads (default $OMP_NUM_THREADS, else half the CPUs: on a busy
                         machine fewer threads than torch's default run faster)
  --verbose=True         the full console (RecBole's config dump, model printout, every log line);
                         by default a short header, a line per epoch, progress lines and a summary
  --progress_seconds=S   least seconds between two progress lines of a long stage (default 10)
  --nproc=N              N processes train the run together (torch.distributed: gloo on the CPU, one GPU
                         each with --gpu_id=0,1,...); SASRecPlus and RecBole's models
  --extra_keys=A,B       keys to accept although nothing in RecBole or this project reads them (for your
                         own model or trainer)
SASRecSAE and SteerableSASRec:
  --sasrec_checkpoint=P  a trained SASRec/SASRecPlus model.pth to put the SAE on (no SASRec training)
  --sae_run=RUN_FOLDER   a finished SASRecSAE run: its SASRec, SAE and settings (SteerableSASRec needs it)
  --steer=EDITS          SteerableSASRec's edit for the steered test report, e.g. "class=Western:+6",
                         "latent=12:scale=2"
  --steer_sweep=TARGET   an attribute value or latent whose strength is swept, e.g. "class=Western"
  --strengths=A,B,...    the strengths of the sweep (default -8,-4,0,4,8)
SAERec:
  --text_embeddings=F    item embeddings from a .safetensors file instead of running text_encoder
A sweep (runs each model x dataset x seed x grid point in its own process; see properties/sweep/):
  --sweep=FILE           a sweep yaml (a path, or a shipped one: sweep/quick.yaml, sweep/full.yaml)
  --results=FILE.jsonl   the results file (default runs/sweeps/<name>.jsonl); a rerun skips finished runs
  --report_dir=DIR       where the report goes (default: beside the results file)
  --workers=N            runs at once (default the sweep's `workers`)
  --oom_retries=N        requeues of a run out of GPU memory beside other runs
  --backend=ray          each run as a Ray task (needs the distributed extra); --ray_address=auto|HOST:PORT
                         for a cluster (default: a Ray on this machine), --gpus_per_run=F its GPU share
  --models=A,B --datasets=A,B --seeds=1,2
                         replace the sweep's lists (run a sweep in parts into one results file)
  --grid_points="A;B"    only these grid points (labels as in the report, e.g. dropout=0.5)
  --key=value            overrides that key in every run of the sweep
Export SAERec's item embeddings (export-embeddings --help for its options):
  export-embeddings --dataset=D --out=F [--key=value ...]
                         encode the item texts of D with the configured text_encoder into a .safetensors
                         file for --text_embeddings (also: python -m recbole_sae.intents.embedding_file)
Other commands:
  python -m recbole_sae.benchmark report RESULTS.jsonl [...]    write a sweep's report again
  python -m recbole_sae.data.init_yaml --dataset=FOLDER          a commented dataset yaml for your atomic files
  python -m recbole_sae.data.amazon --reviews ... --meta ...     build an Amazon dataset from the raw files

Relative paths mean the folder you run the command from. Bad input ends with one line 'error: ...' and
exit code 2. At the end of a run one line 'RESULT {json}' gives the metrics at the valid metric's
cut-off, the run folder and result_file, the run's whole record."""

HELP_FLAGS = ("-h", "--help")


def parse_args(argv: list[str]) -> dict:
    """``--key=value`` pairs, split at the first '=' (``--help``/``-h`` as ``help: True``); a key given
    twice with different values, or anything else, is a usage error (a key twice with the same value is
    that value)."""
    args = {}
    for arg in argv:
        if arg in HELP_FLAGS:
            args["help"] = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise UsageError(f"unrecognised argument '{arg}' (expected --key=value; --help lists the options)")
        key, value = arg[2:].split("=", 1)
        if key in args and args[key] != value:
            raise UsageError(f"--{key} is given twice with different values ({args[key]!r}, {value!r}): keep one")
        args[key] = value
    return args


class UsageError(Exception):
    """A command line that is not ``--key=value`` pairs."""


# ------------------------------------------------------------------------------------------------
# --help --model=MODEL: a model's keys with the comments of its yaml

KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def yaml_key_docs(path: Path) -> list[tuple[str, str, list[str]]]:
    """``(key, default text, comment lines)`` of the top-level keys of a commented yaml file, in file
    order; indented lines (a nested default, a continued comment) belong to the key above them."""
    entries: list[tuple[str, str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            match = KEY_LINE.match(line)
            if match:
                comment = (match["comment"] or "").strip()
                entries.append((match["key"], match["value"].strip(), [comment] if comment else []))
            continue
        if entries:
            text = line.strip()
            entries[-1][2].append(text[1:].strip() if text.startswith("#") else re.sub(r"\s+#\s*", "  # ", text))
    return entries


def _model_layers(model: str) -> list[tuple[str, Path]]:
    """(title, yaml) of the layers a model's keys come from, highest first."""
    from recbole_sae.config import PROPERTIES, RECBOLE_PROPERTIES, family_layer
    from recbole_sae.registry import PLUGIN_FAMILIES, get_model

    model_class = get_model(model)
    name = model_class.__name__
    layers = []
    for title, path in [
        (f"{name} (properties/model/{name}.yaml)", PROPERTIES / "model" / f"{name}.yaml"),
        (f"{name} (RecBole's properties/model/{name}.yaml)", RECBOLE_PROPERTIES / "model" / f"{name}.yaml"),
    ]:
        if path.is_file():
            layers.append((title, path))
            break
    family = family_layer(name)
    if family:
        members = ", ".join(m for m, f in PLUGIN_FAMILIES.items() if f == family.stem)
        layers.append((f"the {family.stem} family: {members} (properties/family/{family.name})", family))
    parent = getattr(model_class, "parent_model", None)
    if parent:
        path = RECBOLE_PROPERTIES / "model" / f"{parent}.yaml"
        if path.is_file():
            layers.append((f"{parent}, under {name} (RecBole's properties/model/{parent}.yaml)", path))
    return layers


def model_help(model: str, dataset: str | None = None) -> str:
    """The keys of ``model`` (and of ``dataset``'s yaml, and of every run), default and meaning."""
    from recbole_sae.config import PROPERTIES, RECBOLE_PROPERTIES

    layers = _model_layers(model)
    if dataset and (PROPERTIES / "dataset" / f"{dataset}.yaml").is_file():
        layers.append(
            (f"dataset {dataset} (properties/dataset/{dataset}.yaml)", PROPERTIES / "dataset" / f"{dataset}.yaml")
        )
    layers.append(("every run (properties/overall.yaml: the evaluation protocol)", PROPERTIES / "overall.yaml"))
    shown: set[str] = set()
    lines = []
    for title, path in layers:
        entries = [e for e in yaml_key_docs(path) if e[0] not in shown]
        if not entries:
            continue
        lines += ["", f"Keys of {title}:"]
        for key, value, comments in entries:
            shown.add(key)
            head = f"  --{key}={value}" if value else f"  --{key}"
            first, rest = (comments[0], comments[1:]) if comments else ("", [])
            lines.append(
                f"{head:<34} {first}".rstrip() if len(head) < 34 else head + ("\n" + " " * 35 + first if first else "")
            )
            lines += [" " * 35 + text for text in rest]
    lines += [
        "",
        "RecBole's own keys (data filtering, field names, training and evaluation settings) work too: "
        f"{RECBOLE_PROPERTIES / 'overall.yaml'} and {RECBOLE_PROPERTIES / 'dataset' / 'sample.yaml'}.",
        "Layers, lowest first: RecBole's defaults < the parent model's yaml < properties/overall.yaml < the "
        "model family's yaml < the model's yaml < the dataset's yaml < --config_files < --key=value.",
    ]
    return "\n".join(lines)


def help_text(args: dict) -> str:
    text = USAGE + "\n" + OPTIONS
    if args.get("model"):
        text += "\n" + model_help(args["model"], args.get("dataset"))
    return text


# ------------------------------------------------------------------------------------------------


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def command_text(args: dict) -> str:
    """The command of a run as the run's log, lock and resume state show it: the program and the
    ``--key=value`` pairs with every path made absolute."""
    return " ".join([sys.argv[0], *(f"--{key}={value}" for key, value in args.items())])


# Exit code of a run stopped by Ctrl-C (the shell's 128 + SIGINT).
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """The command line ``argv`` (default: the process's arguments); the exit code. Ctrl-C ends a run
    with one line that says how to go on and exit code 130, not a traceback (a sweep says its own)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if any(arg.startswith("--run_name") for arg in argv):
            hint = "the same command again resumes the run from its last saved state"
        else:
            hint = "the same command with --resume=<the run folder under runs/> goes on from its last saved state"
        print(f"interrupted: {hint}", file=sys.stderr)
        return INTERRUPTED


def _main(argv: list[str]) -> int:
    from recbole_sae.paths import anchor_environment, resolve_cli_args

    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    try:
        args = parse_args(argv)
    except UsageError as err:
        return _error(str(err))
    if not args or args.get("help"):
        try:
            print(help_text(args))
        except RecboleSAEError as err:
            return _error(str(err))
        return 0
    # Paths are resolved here, once: a relative path means the caller's folder wherever the run goes on.
    anchor_environment()
    args = resolve_cli_args(args)
    if "sweep" in args:
        from recbole_sae.benchmark import main as sweep_main

        return sweep_main(args)

    try:
        from recbole_sae.quick_start import run_recbole_sae

        result = run_recbole_sae(
            model=args.get("model", "SASRec"),
            dataset=args.get("dataset", "ml-100k"),
            config_file_list=args.get("config_files"),
            cmd_args=args,
            command=command_text(args),
        )
    except RecboleSAEError as err:
        return _error(str(err))
    # the compact record (metrics at the valid metric's cut-off, a summary of each report); all of it
    # is in result.json, whose path the record gives
    print("RESULT " + json.dumps(getattr(result, "compact", None) or result))
    return 0


# ------------------------------------------------------------------------------------------------
# export-embeddings: SAERec's item embeddings into a .safetensors file

EXPORT_USAGE = """usage: recbole-sae export-embeddings --dataset=DATASET --out=FILE [--config_files=a.yaml,b.yaml] [--key=value ...]
       (the same: run_recbole_sae.py export-embeddings ..., python -m recbole_sae.intents.embedding_file ...)

Encodes the item texts of DATASET with the configured text_encoder (through its cache) and writes the
rows of the items in a .safetensors file that SAERec reads with --text_embeddings=FILE.

  --dataset=DATASET     the dataset whose item texts are encoded (found as for a run)
  --out=FILE            the .safetensors file to write
  --config_files=A,B    yaml files layered over the project's defaults, in order
  --key=value           any config key (text_encoder, text_pooling, intent_cache_dir, data_path, filters, ...)"""


def _subcommand_args(argv, usage: str, required: tuple, name: str) -> dict | int:
    """A subcommand's ``--key=value`` arguments with their paths made absolute, or its exit code
    (after ``--help``'s usage, or one error line: a bad argument, a required one missing)."""
    from recbole_sae.paths import anchor_environment, resolve_cli_args

    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
    except UsageError as err:
        return _error(str(err))
    if args.get("help"):
        print(usage)
        return 0
    missing = [f"--{key}" for key in required if not args.get(key)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return _error(f"{' and '.join(missing)} {verb} required ({name} --help lists the options)")
    anchor_environment()
    return resolve_cli_args(args)


# Keys of the export's command line that are not config keys.
EXPORT_ONLY_KEYS = ("out", "model")


def export_main(argv: list[str] | None = None) -> int:
    """``export-embeddings`` with the arguments after it (default: the process's arguments); the exit code."""
    import logging

    args = _subcommand_args(argv, EXPORT_USAGE, ("dataset", "out"), "export-embeddings")
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from recbole_sae.intents.embedding_file import export_item_embeddings

        path, shape = export_item_embeddings(
            args["dataset"],
            args["out"],
            args.get("config_files"),
            cmd_args={key: value for key, value in args.items() if key not in EXPORT_ONLY_KEYS},
        )
    except RecboleSAEError as err:
        return _error(str(err))
    print(f"wrote {shape[0]} item embeddings of dim {shape[1]} ({shape[0]} x {shape[1]}) to {path.resolve()}")
    return 0


# ------------------------------------------------------------------------------------------------
# explain: a finished SAERec run's explanations and faithfulness, written again with this code

EXPLAIN_USAGE = """usage: recbole-sae explain --run=RUN_FOLDER [--explain_users=N] [--faithfulness_users=N] [--key=value ...]
       (the same: run_recbole_sae.py explain ...)

Reloads a finished SAERec run (its model.pth and the intent stage in its folder) and writes its
intents/ again: intents.md, explanations.json (example test users: each recommended item with the
intents that raised its score most; the faithfulness figure) and one HTML page per example user.
Prints one EXPLAINED line (JSON: the folder and the faithfulness figure).

  --run=RUN_FOLDER           the run folder (or its model.pth)
  --explain_users=N          example users in explanations.json (default: the run's)
  --faithfulness_users=N     test users the faithfulness figure is measured over (default: the run's)
  --key=value                any other config key over the run's own (e.g. --data_path on another machine)"""


def explain_main(argv: list[str] | None = None) -> int:
    """``explain`` with the arguments after it (default: the process's arguments); the exit code."""
    from recbole_sae import runfiles

    args = _subcommand_args(argv, EXPLAIN_USAGE, ("run",), "explain")
    if isinstance(args, int):
        return args
    run = Path(str(args.pop("run")))
    if not (run / runfiles.CHECKPOINT).is_file() and not (run.is_file() and run.name.endswith(".pth")):
        return _error(
            f"{run} is not a finished run: no {runfiles.CHECKPOINT} there (pass a run folder of a SAERec run)"
        )
    try:
        from recbole_sae import runlock
        from recbole_sae.intents.explain import write_run_explanations
        from recbole_sae.quick_start import load_data_and_model

        config, model, _, train_data, _, test_data = load_data_and_model(str(run), "SAERec", config_dict=args)
        with runlock.lock_run_dir(config["run_dir"], " ".join(["explain", *(argv or [])])):
            summary, _ = write_run_explanations(
                config, model, train_data, test_data, config["device"], config["run_dir"]
            )
    except RecboleSAEError as err:
        return _error(str(err))
    print("EXPLAINED " + json.dumps({"intents_dir": summary["intents_dir"], "faithfulness": summary["faithfulness"]}))
    return 0


SUBCOMMANDS = {"export-embeddings": export_main, "explain": explain_main}

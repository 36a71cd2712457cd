"""Checks of a run's settings and data that turn a deep traceback into one clear error.

:func:`check_settings` runs when the config is built, before a run folder exists or any data is
read: the common size, count and rate keys must have the type and range they need, a switch (a key
whose shipped default is true or false) must be true or false, the validation metric must be one
the evaluation computes, and a sequential model must be evaluated by full ranking.
:func:`check_splits` runs after the data is split: a split with no row would mean a run that trains
or evaluates nothing (RecBole would train and report ``{}`` or fail deep in a trainer).
"""

from __future__ import annotations

from recbole_sae.data import masking
from recbole_sae.errors import ConfigError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The kinds of value a key may need to hold: (what the message says it must be, the test). Each
# table of checks (here, and a model's own in its ``check_config``) pairs a kind with its keys.
WHOLE_AT_LEAST_1 = ("a whole number of at least 1", lambda v: is_int(v) and v >= 1)
WHOLE_AT_LEAST_0 = ("a whole number of at least 0", lambda v: is_int(v) and v >= 0)
ABOVE_0 = ("a number above 0", lambda v: is_number(v) and v > 0)
AT_LEAST_0 = ("a number of at least 0", lambda v: is_number(v) and v >= 0)
IN_0_1 = ("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1)
PROBABILITY = ("a probability in [0, 1)", IN_0_1[1])

# (kind, {key: an example value for the message}).
# eval_step 0 means no validation; stopping_step 0 stops at the first validation without improvement.
RANGES = (
    (
        WHOLE_AT_LEAST_1,
        {
            "hidden_size": 64,
            "inner_size": 256,
            "n_layers": 2,
            "n_heads": 2,
            "embedding_size": 64,
            "epochs": 50,
            "train_batch_size": 256,
            "eval_batch_size": 4096,
            "MAX_ITEM_LIST_LENGTH": 50,
            "nproc": 2,
        },
    ),
    (WHOLE_AT_LEAST_0, {"eval_step": 1, "stopping_step": 10, "seed": 2020}),
    (PROBABILITY, {"hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "dropout_prob": 0.2}),
    (ABOVE_0, {"learning_rate": 0.001}),
    (AT_LEAST_0, {"weight_decay": 0.0001, "resume_every": 120, "progress_seconds": 10}),
)
# RecBole models that need more than one of something: model -> (key, least value, why).
MODEL_MINIMUMS = {
    "FEARec": ("n_layers", 2, "its frequency filters divide the spectrum over n_layers - 1 layers"),
}


def check_ranges(config, ranges=RANGES, choices=None) -> None:
    """Raise :class:`ConfigError` for the first key of ``ranges`` (as :data:`RANGES`) whose value is
    set and fails its test, or of ``choices`` (key -> the values it may take) set to another value."""
    for (what, valid), examples in ranges:
        for key, example in examples.items():
            value = config[key]
            if value is not None and not valid(value):
                raise ConfigError(f"{key}={value!r}: it must be {what} (e.g. --{key}={example})")
    for key, allowed in (choices or {}).items():
        if config[key] is not None and config[key] not in allowed:
            raise ConfigError(f"{key}={config[key]!r}: it must be one of {', '.join(map(str, allowed))}")


def check_settings(config) -> None:
    """Raise :class:`ConfigError` for the first setting that cannot work (``--hidden_size=abc``,
    ``--hidden_size=-5``, ``--hidden_dropout_prob=2``, ``--filter_seen=maybe``, ``--valid_metric=Foo@10``);
    a model class with a ``check_config(config)`` checks its own keys here too."""
    check_ranges(config)
    check_switches(config)
    check_intervals(config)
    own = getattr(getattr(config, "model_class", None), "check_config", None)
    if callable(own):
        own(config)
    check_valid_metric(config)
    check_full_ranking(config)
    masking.check(config)
    if config["model"] in MODEL_MINIMUMS:
        key, least, why = MODEL_MINIMUMS[config["model"]]
        if config[key] is not None and config[key] < least:
            raise ConfigError(
                f"{config['model']} needs {key} >= {least} ({why}); got {key}={config[key]}: "
                f"pass --{key}={least} or more"
            )


def check_switches(config) -> None:
    """A key whose default (RecBole's or this project's yaml layers) is true or false must stay so:
    ``--filter_seen=maybe`` would otherwise be the text 'maybe', which Python takes as true."""
    defaults = getattr(config, "internal_config_dict", None) or {}
    for key, default in defaults.items():
        value = config.final_config_dict.get(key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: it must be true or false (e.g. --{key}={str(not default).lower()})")


def _interval_problem(text: str) -> str | None:
    """Why ``text`` (RecBole's ``[a,b)`` intervals, ';'-separated) is not one; None when it is."""
    for part in text.split(";"):
        part = part.strip()
        ends = part[1:-1].split(",")
        if len(part) < 2 or part[0] not in "([" or part[-1] not in ")]" or len(ends) != 2:
            return f"'{part}' is not an interval like [5,inf) or (0,100]"
        try:
            low, high = float(ends[0]), float(ends[1])
        except ValueError:
            return f"the ends of '{part}' are not numbers"
        if low > high:
            return f"'{part}' is empty (its left end is above its right end)"
    return None


def check_intervals(config) -> None:
    """RecBole's interval filters (``user_inter_num_interval``, ``item_inter_num_interval``,
    ``val_interval``) are readable intervals: RecBole logs a warning for one it cannot read and
    filters nothing, so ``--user_inter_num_interval=abc`` ran on unfiltered data."""
    keys = {key: config[key] for key in ("user_inter_num_interval", "item_inter_num_interval")}
    val_interval = config["val_interval"]
    if isinstance(val_interval, dict):
        keys.update({f"val_interval's {field}": value for field, value in val_interval.items()})
    elif val_interval is not None:
        raise ConfigError(
            f"val_interval={val_interval!r}: it must map fields to intervals, e.g. {{'rating': '[3,inf)'}}"
        )
    for key, value in keys.items():
        if value is None:
            continue
        problem = _interval_problem(str(value))
        if problem:
            raise ConfigError(f"{key}={value!r}: {problem}; write e.g. '[5,inf)' (RecBole would filter nothing)")


def check_metric_names(metrics) -> None:
    """Every name in ``metrics`` is one of RecBole's metrics (RecBole raised NotImplementedError)."""
    from recbole.evaluator.register import metric_types

    unknown = [m for m in (metrics or []) if not isinstance(m, str) or m.lower() not in metric_types]
    if unknown:
        names = ", ".join(sorted(metric_types))
        raise ConfigError(f"unknown metric(s) {', '.join(map(str, unknown))}: use RecBole's metric names ({names})")


def check_valid_metric(config) -> None:
    """``valid_metric`` names one of ``metrics`` at one of ``topk`` (``NDCG@10``); else early stopping
    would look up a figure no evaluation computes, and fail after the first epoch's training."""
    from recbole.evaluator.register import metric_types
    from recbole.utils import EvaluatorType

    valid_metric, metrics, topk = config["valid_metric"], config["metrics"] or [], config["topk"] or []
    computed = [
        f"{m}@{k}" if metric_types.get(m.lower()) == EvaluatorType.RANKING else m for m in metrics for k in topk
    ]
    if not isinstance(valid_metric, str) or valid_metric.lower() not in {c.lower() for c in computed}:
        raise ConfigError(
            f"valid_metric={valid_metric}: no evaluation computes it (metrics {metrics}, topk {topk}): "
            f"choose one of {', '.join(dict.fromkeys(computed))}, or add it to --metrics / --topk"
        )


def check_full_ranking(config) -> None:
    """A sequential model evaluates by full ranking: both protocols (``recbole_sae.protocol``) rank
    every item, as the papers do; sampled candidates (``uni100``, ``pop100``) failed after training."""
    from recbole.utils import ModelType

    mode = (config["eval_args"] or {}).get("mode") or {}
    sampled = {split: m for split, m in mode.items() if m != "full"} if isinstance(mode, dict) else {"all": mode}
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and sampled:
        raise ConfigError(
            f"eval_args mode {sampled}: sequential models here are evaluated by ranking every item (both "
            "protocols, seen items removed and kept, are full rankings, as in the papers; sampled "
            "candidates give other and less stable figures): set mode to full, e.g. "
            "--eval_args=\"{'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'full'}\""
        )


def check_splits(config, train_data, valid_data, test_data) -> None:
    """Every split has rows; else a :class:`ConfigError` that says which is empty and why."""
    empty = [
        name
        for name, data in (("training", train_data), ("validation", valid_data), ("test", test_data))
        if data is not None and len(data.dataset) == 0
    ]
    if not empty:
        return
    split = (config["eval_args"] or {}).get("split") or {}
    why = (
        "with leave-one-out splitting (eval_args split LS) a user is evaluated only with at least 3 interactions "
        "(one or more to train on, one to validate, one to test), and no user has that many after filtering"
        if "LS" in split
        else "the split ratios or the filtering leave no interaction there"
    )
    raise ConfigError(
        f"{config['model']} on {config['dataset']}: the {' and '.join(empty)} data {'is' if len(empty) == 1 else 'are'} "
        f"empty, so nothing would be {'trained' if empty == ['training'] else 'evaluated'}: {why}. Use data with "
        "longer user histories, or loosen the filters (user_inter_num_interval, item_inter_num_interval)"
    )

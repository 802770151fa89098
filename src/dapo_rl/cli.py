"""The ``dapo`` command: parse arguments, build a Config, call into the package.

    dapo train [--config FILE.yaml] [--preset NAME] [KEY=VALUE ...]
    dapo eval --model M --data FILE [--k 8] [--temperature 1.0] [--top-p 0.7] [--template NAME]
              [--limit N] [--verifier NAME] [--max-new-tokens N] [--out FILE] [KEY=VALUE ...]
              (KEY: data.*, rewards.*, rollout.* keys, as in train)
    dapo report [RUN_DIR ...] [--ablation results.json] [--out report.html] [--labels a,b]
    dapo ablate [--out DIR] [--seeds N] [--experiment NAME] [--task NAME] [--jobs J] [KEY=VALUE ...]
    dapo export RUN_DIR --out DIR [--step N]

``train`` and ``eval`` are thin layers over ``dapo_rl.api`` (``make_config``,
``run_training``, ``evaluate``). Every DapoError becomes one line on stderr and exit
status 2. A training run stopped by SIGINT or SIGTERM prints one line on how to resume and
exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dapo_rl.errors import DapoError


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _train(args: argparse.Namespace) -> None:
    from dapo_rl import api, config

    layers = [config.load_yaml(args.config)] if args.config else []
    overrides = dict(config.parse_override(o) for o in args.overrides)
    cfg = api.make_config(*layers, overrides, preset=args.preset)
    # Imported only now: torch and transformers take seconds, a config error should not.
    _quiet_libraries()
    result = api.run_training(cfg)
    print(f"run written to {result.run_dir}")


def _ablate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dapo_rl import config
    from dapo_rl.ablate import plan, run_ablation

    if args.seeds < 1 or args.jobs < 1:
        raise DapoError("--seeds and --jobs must be >= 1")
    overrides = dict(config.parse_override(o) for o in args.overrides)
    seeds = list(range(args.seeds))
    plan(Path(args.out), args.experiment, seeds, overrides, args.task)  # checked first
    _quiet_libraries()
    result = run_ablation(
        Path(args.out),
        overrides,
        seeds=seeds,
        experiment=args.experiment,
        jobs=args.jobs,
        task=args.task,
        keep_checkpoints=args.keep_checkpoints,
    )
    print((Path(args.out) / "ablation.md").read_text(), end="")
    print(
        f"{len(result['rows'])} rows x {len(seeds)} seeds; see {Path(args.out) / 'ablation.json'}"
    )


def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dapo_rl.report import write_report

    labels = args.labels.split(",") if args.labels else None
    runs = [Path(d) for d in args.run_dirs]
    out = write_report(runs, Path(args.out), labels=labels, ablation=args.ablation)
    print(f"report written to {out}")


def _eval(args: argparse.Namespace) -> None:
    from dapo_rl import api, config
    from dapo_rl.eval import result_table

    overrides = dict(config.parse_override(o) for o in args.overrides)
    api.eval_settings(overrides)  # a bad key fails here, before torch loads
    flags = {
        "template": args.template,
        "verifier": args.verifier,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "batch_size": args.batch_size,
    }
    _quiet_libraries()
    res = api.evaluate(
        args.model,
        args.data,
        overrides,
        k=args.k,
        limit=args.limit,
        seed=args.seed,
        progress=not args.no_progress,
        **{key: value for key, value in flags.items() if value is not None},
    )
    print(result_table(res))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"metrics written to {args.out}")


def _export(args: argparse.Namespace) -> None:
    _quiet_libraries()
    from dapo_rl.train.export import export

    out = export(args.run_dir, args.out, step=args.step)
    print(f"model written to {out}")


def _parser() -> argparse.ArgumentParser:
    from dapo_rl import config
    from dapo_rl.ablate import EXPERIMENTS

    p = argparse.ArgumentParser(
        prog="dapo", description="DAPO / GRPO training from verifiable rewards"
    )
    sub = p.add_subparsers(dest="command", required=True)
    defaults = config.EvalConfig()
    t = sub.add_parser(
        "train",
        help="train a policy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train with the dapo preset unless told otherwise. Config keys (KEY=VALUE, "
        "dotted), with defaults:\n\n" + config.help_text(),
    )
    t.add_argument("--config", help="YAML file of config keys (nested or dotted)")
    t.add_argument(
        "--preset", choices=sorted(config.PRESETS), help="named settings (default: dapo)"
    )
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    t.set_defaults(func=_train)
    e = sub.add_parser(
        "eval",
        help="evaluate a model on a held-out file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Greedy accuracy, and with --k: avg@k, pass@k (unbiased) and maj@k, plus "
        "mean completion length and truncation rate. The verifier follows the file's layout "
        "(gsm8k, asdiv: gsm8k; math500, aime, amc: math; dapo17k: dapo_answer).",
    )
    e.add_argument("--model", default="smollm2-135m-instruct")
    e.add_argument(
        "--data", help="data file or datasets folder (.jsonl/.json/.csv/.parquet), or data.path="
    )
    e.add_argument(
        "--k",
        type=int,
        default=0,
        help="samples per problem for avg@k / pass@k / maj@k (0: greedy only)",
    )
    e.add_argument(
        "--temperature",
        type=float,
        help=f"sampling temperature for --k (default {defaults.temperature})",
    )
    e.add_argument("--top-p", type=float, help=f"nucleus threshold for --k ({defaults.top_p})")
    e.add_argument(
        "--template",
        help="prompt template (auto, dapo, dapo_oneshot, boxed, plain); as data.template",
    )
    e.add_argument(
        "--verifier", help="verifier spec (default: from the file's layout); as rewards.fn"
    )
    e.add_argument("--limit", type=int, default=None, help="first N problems only")
    e.add_argument("--max-new-tokens", type=int, help="generation limit (default 512)")
    e.add_argument("--batch-size", type=int, help="sequences decoded together (default 64)")
    e.add_argument("--seed", type=int, default=0, help="seed of the --k sampling")
    e.add_argument("--out", help="write the settings and metrics as JSON here")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="data.* (format, prompt_field, answer_field, prompt_template, template), "
        "rewards.* (fn, timeout) and rollout.* (max_new_tokens, temperature, top_p, batch_size)",
    )
    e.set_defaults(func=_eval)
    a = sub.add_parser(
        "ablate",
        help="seeded DAPO ablation with 95%% intervals (cumulative or one fix at a time)",
    )
    a.add_argument("--out", default="runs/ablation", help="folder for the row runs and the tables")
    a.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, the same for every row")
    a.add_argument(
        "--experiment",
        default="cumulative",
        choices=EXPERIMENTS,
        help="cumulative (naive GRPO -> +each fix -> DAPO), headline (naive GRPO vs DAPO "
        "only) or one fix varied on the dapo preset",
    )
    a.add_argument(
        "--task",
        default="arithmetic",
        help="built-in task settings under every row: arithmetic (the quick default), tight "
        "(the same sums under a generation limit that truncates some completions) or hot "
        "(sampled at temperature 1.3: long wrong completions, for the token-level loss)",
    )
    a.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    a.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each finished run's last checkpoint (removed by default: the metrics are "
        "the result, and a SmolLM2-135M checkpoint is 1.6 GB)",
    )
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="budget etc. for every row")
    a.set_defaults(func=_ablate)
    r = sub.add_parser("report", help="HTML report comparing runs")
    r.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    r.add_argument(
        "--ablation", metavar="JSON", help="ablation results over seeds (report.ablation)"
    )
    r.add_argument("--out", default="report.html", help="HTML file to write")
    r.add_argument("--labels", help="comma-separated legend names, one per RUN_DIR")
    r.set_defaults(func=_report)
    x = sub.add_parser(
        "export",
        help="a run's checkpoint as a Hugging Face model folder (LoRA merged)",
        description="The newest intact checkpoint of RUN_DIR (or --step N) as safetensors, "
        "config and tokenizer, loadable with AutoModelForCausalLM.from_pretrained.",
    )
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--out", required=True, help="new (or empty) folder to write")
    x.add_argument("--step", type=int, default=None, help="this step's checkpoint")
    x.set_defaults(func=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    # KEY=VALUE after options: argparse may have matched the empty list to `overrides` first
    if rest and hasattr(args, "overrides") and all("=" in r and r[0] != "-" for r in rest):
        args.overrides = [*args.overrides, *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        args.func(args)
    except DapoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # train's Interrupted carries its signal and resume line
        print(str(e) or "interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)  # 130 for SIGINT, 143 for SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())

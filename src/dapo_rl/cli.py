"""The ``dapo`` command: parse arguments, build a Config, call into the package.

    dapo train [--config FILE.yaml] [--preset NAME] [KEY=VALUE ...]
    dapo eval --model M --data FILE [--k 8] [--temperature 1.0] [--top-p 0.7] [--template NAME]
              [--limit N] [--verifier NAME] [--max-new-tokens N] [--out FILE]
    dapo report RUN_DIR [RUN_DIR ...] [--out report.html] [--labels a,b]
    dapo ablate [--out DIR] [KEY=VALUE ...]
    dapo export RUN_DIR --out DIR [--step N]

Every DapoError becomes one line on stderr and exit status 2. A training run stopped by
SIGINT or SIGTERM prints one line on how to resume and exits with 130 or 143.
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
    from dapo_rl import config

    file_values = config.load_yaml(args.config) if args.config else {}
    overrides = dict(config.parse_override(o) for o in args.overrides)
    if args.preset:
        overrides["preset"] = args.preset
    cfg = config.build(file_values=file_values, overrides=overrides)
    # Imported only now: torch and transformers take seconds, a config error should not.
    _quiet_libraries()
    from dapo_rl.train.loop import train

    run_dir = train(cfg)
    print(f"run written to {run_dir}")


def _ablate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dapo_rl import config
    from dapo_rl.ablate import rows, run_ablation

    overrides = dict(config.parse_override(o) for o in args.overrides)
    for _, row in rows():  # check every row's config before any run starts
        config.build(overrides={**row, **overrides, "run.dir": args.out})
    _quiet_libraries()
    results = run_ablation(Path(args.out), overrides)
    print((Path(args.out) / "ablation.md").read_text(), end="")
    print(f"{len(results)} rows; report in {Path(args.out) / 'report.html'}")


def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dapo_rl.report import write_report

    labels = args.labels.split(",") if args.labels else None
    out = write_report([Path(d) for d in args.run_dirs], Path(args.out), labels=labels)
    print(f"report written to {out}")


def _eval(args: argparse.Namespace) -> None:
    from dapo_rl.eval import result_table, run_file

    _quiet_libraries()
    res = run_file(
        args.data,
        model=args.model,
        verifier=args.verifier,
        template=args.template,
        limit=args.limit,
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
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
        description="Greedy accuracy, and with --k: avg@k, pass@k (unbiased) and maj@k, plus "
        "mean completion length and truncation rate. The verifier follows the file's layout "
        "(gsm8k, asdiv: gsm8k; math500, aime, amc: math; dapo17k: dapo_answer).",
    )
    e.add_argument("--model", default="smollm2-135m-instruct")
    e.add_argument("--data", required=True, help="JSONL/JSON/Parquet file in a known layout")
    e.add_argument(
        "--k",
        type=int,
        default=0,
        help="samples per problem for avg@k / pass@k / maj@k (0: greedy only)",
    )
    e.add_argument(
        "--temperature",
        type=float,
        default=defaults.temperature,
        help="sampling temperature for --k",
    )
    e.add_argument("--top-p", type=float, default=defaults.top_p, help="nucleus threshold for --k")
    e.add_argument(
        "--template", default="dapo", help="prompt template (dapo, dapo_oneshot, boxed, plain)"
    )
    e.add_argument(
        "--verifier", default=None, help="verifier spec (default: from the file's layout)"
    )
    e.add_argument("--limit", type=int, default=None, help="first N problems only")
    e.add_argument("--max-new-tokens", type=int, default=512)
    e.add_argument("--batch-size", type=int, default=64, help="sequences decoded together")
    e.add_argument("--seed", type=int, default=0, help="seed of the --k sampling")
    e.add_argument("--out", help="write the settings and metrics as JSON here")
    e.set_defaults(func=_eval)
    a = sub.add_parser(
        "ablate",
        help="the cumulative DAPO ablation (naive GRPO -> ... -> DAPO), same seed and budget",
    )
    a.add_argument("--out", default="runs/ablation", help="folder for the row runs and the tables")
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="budget etc. for every row")
    a.set_defaults(func=_ablate)
    r = sub.add_parser("report", help="HTML report comparing runs")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
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
    args = _parser().parse_args(argv)
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

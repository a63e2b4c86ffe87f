"""`admm-explorer`: run recipes, list models and datasets, serve the dashboard."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_STOPPED = 3


class Progress:
    """Subscriber: one tqdm bar per stage, with the latest loss and test accuracy."""

    def __init__(self):
        self.bar = None
        self.last_accuracy = None

    def __call__(self, event) -> None:
        from tqdm.auto import tqdm

        if event.kind == "run_started":
            tqdm.write(f"{event.model} on {event.dataset} ({event.test_set}), device {event.device}")
        elif event.kind == "stage_started":
            self.bar = tqdm(total=event.total_batches, desc=f"stage {event.stage} {event.stage_kind}",
                            unit="batch", dynamic_ncols=True, leave=True)
        elif event.kind == "batch_ended" and self.bar is not None:
            self.bar.update(1)
            if event.step % 20 == 0:
                post = {"loss": f"{event.loss:.3f}"}
                if self.last_accuracy is not None:
                    post["test"] = f"{self.last_accuracy:.2%}"
                self.bar.set_postfix(post, refresh=False)
        elif event.kind == "evaluation_done":
            self.last_accuracy = event.test_accuracy
        elif event.kind == "admm_round" and self.bar is not None:
            primal = max(layer["primal"] for layer in event.layers.values())
            self.bar.set_postfix({"round": event.round, "max ||W-Z||": f"{primal:.3g}"}, refresh=False)
        elif event.kind == "stage_ended" and self.bar is not None:
            self.bar.close()
            self.bar = None
            tqdm.write(f"stage {event.stage} {event.stage_kind} {event.status}: test accuracy "
                       f"{event.accuracy:.2%}, compression {event.compression:.1f}x, {event.seconds:.1f} s")
        elif event.kind == "candidates_ranked":
            ranked = ", ".join(f"{c['candidate']} {c['accuracy']:.2%}{' kept' if c['kept'] else ''}"
                               for c in event.ranked)
            tqdm.write(f"progressive step {event.step}/{event.steps}, {event.selected_on} accuracy: {ranked}")
        elif event.kind == "purify_done":
            b, a = event.before, event.after
            tqdm.write(f"P-RM: params {b['params']:,} -> {a['params']:,}, MACs {b['macs']:,} -> {a['macs']:,}")


def how_to_go_on(out: Path) -> str:
    """After a failed stage: which file to edit for --resume, and the checkpoint a new run can start from."""
    import json

    stages = json.loads((out / "state.json").read_text())["stages"] if (out / "state.json").exists() else []
    failed = len(stages)
    text = (f"everything written so far is in {out}. To go on, fix stages[{failed}] in {out / 'recipe.yaml'} "
            f"(the recipe --resume reads), then: admm-explorer run --resume {out}")
    if stages:
        text += f"; or start a new run from the last good checkpoint: start: {out / stages[-1]['checkpoint']}"
    return text


def cmd_run(args) -> int:
    """Under torchrun every rank runs this; rank 0 alone shows progress and messages."""
    from .engine.run import run_recipe
    from .errors import StageFailed, WriteFailed
    from .parallel import world

    launch = world()
    main_rank = launch.main

    if args.resume is None and args.recipe is None:
        print("error: give a RECIPE (with --out DIR) or --resume DIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    holder = {}

    def on_sigint(signum, frame):
        session = holder.get("session")
        # under torchrun the agent signals every worker again and kills them soon after: no stop between
        # batches to wait for there (the run resumes from its last finished stage)
        if session is None or session.stop_requested or launch.size > 1:
            raise KeyboardInterrupt
        print("\nstopping after this batch (Ctrl-C again to abort) ...", file=sys.stderr)
        session.stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        summary = run_recipe(args.recipe, out=args.out, resume=args.resume,
                             subscribers=() if args.quiet or not main_rank else (Progress(),),
                             on_session=lambda s: holder.__setitem__("session", s))
    except StageFailed as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
            print(how_to_go_on(args.resume or args.out), file=sys.stderr)
        return EXIT_FAILED
    except WriteFailed as e:
        out = args.resume or args.out
        print(f"error: {e}", file=sys.stderr)
        print(f"everything written before is kept; free some space, then: admm-explorer run --resume {out}",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
        launch.close()
    out = args.resume or args.out
    if not main_rank:
        return EXIT_STOPPED if summary["status"] == "stopped" else 0
    if summary["status"] == "stopped":
        print(f"stopped; resume with: admm-explorer run --resume {out}")
        return EXIT_STOPPED
    print(f"test accuracy {summary['accuracy']:.2%}, compression {summary['compression']:.1f}x; "
          f"run folder {out}")
    return 0


def cmd_models(args) -> int:
    from .models import MODELS

    for name, spec in MODELS.items():
        c, h, w = spec.input_shape
        print(f"{name:18s} {c}x{h}x{w} -> {spec.num_classes:<5d} {spec.description}")
    return 0


def cmd_datasets(args) -> int:
    from .data import DATASETS

    for name, entry in DATASETS.items():
        print(f"{name:14s} {entry.description}")
    return 0


def cmd_dashboard(args) -> int:
    from .ui.serve import serve

    return serve(port=args.port, open_browser=not args.no_browser, use_token=not args.no_token, root=args.root,
                 max_kernels=args.max_kernels, cull_idle=args.cull_idle, page=args.page)


def cmd_lab(args) -> int:
    from .ui.serve import lab

    return lab(port=args.port, open_browser=not args.no_browser, use_token=not args.no_token, page=args.page)


EXAMPLES = """examples:
  admm-explorer dashboard                                 the Explorer in your browser (Voila)
  admm-explorer dashboard 01                              lesson 01 of the course as a page for students
  admm-explorer lab                                       JupyterLab on the course notebooks
  admm-explorer run recipes/lenet5-admm.yaml --out runs/a
  admm-explorer run --resume runs/a
  torchrun --nproc_per_node=4 -m admm_explorer run recipe.yaml --out runs/b   one process per GPU (DDP)
  admm-explorer models"""


def subcommand(sub, name: str, fn, summary: str, example: str) -> argparse.ArgumentParser:
    command = sub.add_parser(name, help=summary, description=f"{summary}\n\nexample:\n  {example}",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    command.set_defaults(fn=fn)
    return command


def server_options(command: argparse.ArgumentParser, port: int) -> None:
    command.add_argument("--port", type=int, default=port, help=f"port on 127.0.0.1 (default {port}; 0: any free)")
    command.add_argument("--no-browser", action="store_true", help="only print the address")
    command.add_argument("--no-token", action="store_true",
                         help="serve without the random token in the address (anything on this machine can then "
                              "drive it)")


def parser() -> argparse.ArgumentParser:
    from .ui.serve import CULL_IDLE_SECONDS, MAX_KERNELS  # no torch, no Jupyter: cheap

    p = argparse.ArgumentParser(prog="admm-explorer", description="Explore ADMM weight pruning of PyTorch models: "
                                "a live dashboard, JupyterLab notebooks, and recipes run from the command line.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dash = subcommand(sub, "dashboard", cmd_dashboard, "serve the Explorer with Voila on 127.0.0.1 and open it",
                      "admm-explorer dashboard --port 8866")
    server_options(dash, 8866)
    dash.add_argument("page", nargs="?", default="explorer",
                      help="the page to open: explorer (default) or a course notebook by number or name (01 ... 05); "
                           "every notebook is served, linked from the Explorer's Explain buttons")
    dash.add_argument("--root", type=Path, metavar="DIR",
                      help="folder the page may read and write (checkpoints, exports, data); default: this folder")
    dash.add_argument("--max-kernels", type=int, default=MAX_KERNELS, metavar="N",
                      help=f"open pages at most, each a Python kernel of about 1 GB (default {MAX_KERNELS})")
    dash.add_argument("--cull-idle", type=int, default=CULL_IDLE_SECONDS, metavar="SECONDS",
                      help="a closed or reloaded page's kernel is shut down after this idle time "
                           f"(default {CULL_IDLE_SECONDS})")
    lab = subcommand(sub, "lab", cmd_lab, "open JupyterLab on the course notebooks (the Explorer and the lessons)",
                     "admm-explorer lab")
    server_options(lab, 8888)
    lab.add_argument("page", nargs="?", default="01",
                     help="the notebook to open: a course notebook (default 01, the first lesson) or explorer")
    run = subcommand(sub, "run", cmd_run, "run a recipe into a run folder, or resume a stopped run",
                     "admm-explorer run recipes/lenet5-admm.yaml --out runs/a")
    run.add_argument("recipe", nargs="?", type=Path, help="recipe YAML file")
    run.add_argument("--out", type=Path, help="run folder to create")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue a stopped run folder")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    subcommand(sub, "models", cmd_models, "list the model zoo (names for a recipe's model field)",
               "admm-explorer models")
    subcommand(sub, "datasets", cmd_datasets, "list the datasets (names for a recipe's dataset field)",
               "admm-explorer datasets")
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import AdmmExplorerError  # no imports: torch loads in the commands that need it

    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except AdmmExplorerError as e:  # bad input found before any work (a recipe, data, a folder, a checkpoint)
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank has it; rank 0 says it
            print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

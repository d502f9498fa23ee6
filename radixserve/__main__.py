"""The `radixserve` command line.

Subcommands so far: `info` (model hyperparameters and live kernels) and
`generate` (greedy continuation of token ids on the engine). `serve` arrives
with the HTTP issue.
"""
from __future__ import annotations

import argparse
import sys
import time

from .engine import Model
from .greedy import greedy_generate
from .vocab_text import ids_to_text


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"token ids must be integers separated by commas: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="radixserve", description=__doc__)
    ap.add_argument("-m", "--model", default=None, help="GGUF path (default: the bundled SmolLM2)")
    ap.add_argument("-t", "--threads", type=int, default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print the model's hyperparameters and the live kernels")
    g = sub.add_parser("generate", help="greedy continuation of a prompt given as token ids")
    g.add_argument("ids", type=_parse_ids, help="prompt token ids, e.g. 504,3575,282,4649,314")
    g.add_argument("-n", "--max-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    try:
        model = Model(args.model, threads=args.threads)
    except Exception as e:  # a missing or bad model file: say so, exit non-zero
        print(f"radixserve: {e}", file=sys.stderr)
        return 1
    if args.cmd == "info":
        print(f"model   {model.path}")
        print(f"kernels {model.kernels}, threads {model.threads}")
        for k, v in vars(model.hparams).items() if hasattr(model.hparams, "__dict__") else \
                ((f, getattr(model.hparams, f)) for f in model.hparams.__dataclass_fields__):
            print(f"{k:15} {v}")
        return 0
    eos = model.metadata.get("tokenizer.ggml.eos_token_id")
    t0 = time.perf_counter()
    out = greedy_generate(model, args.ids, args.max_tokens, stop_ids=[eos] if eos is not None else [])
    dt = time.perf_counter() - t0
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    print(ids_to_text(tokens, args.ids) + "\x1b[1m" + ids_to_text(tokens, out) + "\x1b[0m")
    print(f"[{len(out)} tokens in {dt:.2f} s; ids {out}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

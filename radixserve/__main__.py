"""The `radixserve` command line: serve, generate, chat, tokenize, info.

Every subcommand takes -m MODEL (default: the bundled SmolLM2) and
-t/--threads. A missing or unsupported model file is one line on stderr and
exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from scheduler.sampling import SamplingError, SamplingParams

from .chat_template import ChatTemplate, ChatTemplateError
from .engine import Model
from .errors import EngineError
from .generation import GenerationConfig, PromptTooLongError, generate
from .model_path import ModelNotFoundError
from .tokenizer import Tokenizer, TokenizerError

EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="GGUF model file (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("-t", "--threads", type=int, default=None, help="engine threads (default: all cores)")


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens; 0 is off (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus: smallest set reaching p (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="drop tokens below p x the top one (default 0.05)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1: off)")
    p.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); never printed")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="radixserve", description="CPU LLM serving with a radix-tree prefix cache.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="complete a prompt, streaming to the terminal")
    g.add_argument("prompt", help="prompt text (raw text unless --chat)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    g.add_argument("--system", default=None, help="system message for --chat")
    g.add_argument("--special", action="store_true", help="parse special-token markers such as <|im_start|> in the prompt")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the stream")
    _common(g)
    _sampling_flags(g)
    c = sub.add_parser("chat", help="interactive chat (Ctrl-C stops an answer, Ctrl-D quits)")
    c.add_argument("--system", default=None, help="system message")
    _common(c)
    _sampling_flags(c)
    t = sub.add_parser("tokenize", help="print the token ids of a text")
    t.add_argument("text")
    t.add_argument("--special", action="store_true", help="parse special-token markers")
    t.add_argument("--json", action="store_true", help="print a JSON list")
    _common(t)
    i = sub.add_parser("info", help="model hyperparameters and the live kernels")
    _common(i)
    _serve_parser(sub)
    return ap


def _serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the HTTP server (OpenAI-compatible API)")
    _common(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    s.add_argument("--served-model-name", default=None, help="model id clients use (default: the file name)")
    kv = s.add_mutually_exclusive_group()
    kv.add_argument("--kv-pages", type=int, default=None, help="KV cache size in pages (default 1024)")
    kv.add_argument("--kv-bytes", type=int, default=None, help="KV cache size in bytes")
    s.add_argument("--page-size", type=int, default=16, help="tokens per KV page (default 16)")
    s.add_argument("--max-running", type=int, default=32, help="most sequences decoding at once (default 32)")
    s.add_argument("--max-batch-tokens", type=int, default=512, help="tokens per engine step (default 512)")
    s.add_argument("-c", "--ctx-size", type=int, default=None, help="context limit (default: the model's)")
    s.add_argument("--max-waiting", type=int, default=256, help="queued requests before 429 (default 256)")
    sp = s.add_mutually_exclusive_group()
    sp.add_argument("--system-prompt", default=None, help="default system message, pinned in the prefix cache")
    sp.add_argument("--system-prompt-file", default=None, help="read the system prompt from a file")
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (all but /health)")
    s.add_argument("--shutdown-grace", type=float, default=10.0,
                   help="seconds running requests get to finish on SIGTERM (default 10)")
    s.add_argument("--socket-port", type=int, default=None,
                   help="also serve the msgpack socket protocol on this TCP port (0 picks a free one)")
    s.add_argument("--socket-host", default="127.0.0.1", help="address of --socket-port (default 127.0.0.1)")
    s.add_argument("--unix-socket", default=None, metavar="PATH",
                   help="also serve the msgpack socket protocol on a Unix socket at PATH")
    s.add_argument("--cache-file", default=None, metavar="PATH",
                   help="prefix-cache snapshot: loaded at start, saved on shutdown and by POST /v1/cache/save")
    s.add_argument("--cache-save-interval", type=float, default=None, metavar="SECONDS",
                   help="also save the prefix cache every SECONDS (needs --cache-file)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def cmd_serve(args: argparse.Namespace) -> int:
    from scheduler.config import ConfigError, SchedulerConfig

    from .model_path import resolve_model_path
    from .server.config import ServerConfig, ServerConfigError
    from .server.serve import serve

    try:
        resolve_model_path(args.model)
        system = args.system_prompt
        if args.system_prompt_file:
            with open(args.system_prompt_file, encoding="utf-8") as f:
                system = f.read()
        sched = SchedulerConfig(max_running=args.max_running, max_batch_tokens=args.max_batch_tokens,
                                context_length=args.ctx_size)
        config = ServerConfig(model_path=args.model, served_model_name=args.served_model_name,
                              threads=args.threads, kv_pages=args.kv_pages, kv_bytes=args.kv_bytes,
                              page_size=args.page_size, scheduler=sched, system_prompt=system or None,
                              api_key=args.api_key, max_waiting=args.max_waiting,
                              shutdown_grace_s=args.shutdown_grace, cache_file=args.cache_file,
                              cache_save_interval_s=args.cache_save_interval, socket_port=args.socket_port,
                              socket_host=args.socket_host, unix_socket=args.unix_socket)
    except (ModelNotFoundError, OSError, ConfigError, ServerConfigError) as e:
        print(f"radixserve: {e}", file=sys.stderr)
        return EXIT_USAGE
    return serve(config, args.host, args.port, args.log_level)


def _config(args: argparse.Namespace) -> GenerationConfig:
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            repetition_penalty=args.repetition_penalty, seed=args.seed)
    return GenerationConfig(max_tokens=args.max_tokens, sampling=params, stop=tuple(args.stop),
                            ignore_eos=args.ignore_eos)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_generate(args: argparse.Namespace, model: Model, tok: Tokenizer, load_s: float) -> int:
    config = _config(args)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                   [{"role": "user", "content": args.prompt}]
        prompt = ChatTemplate.from_model(model, tok).encode(messages)
    else:
        prompt = tok.encode(args.prompt, add_special=True, parse_special=args.special)
    res = generate(model, tok, prompt, config, on_text=None if args.json else _write)
    if args.json:
        print(json.dumps({
            "prompt_tokens": res.prompt_tokens, "tokens": res.tokens, "text": res.text,
            "finish_reason": res.finish_reason,
            "timings": {"load_s": load_s, "prefill_tok_s": res.prefill_tok_s, "decode_tok_s": res.decode_tok_s},
        }))
    else:
        _write("\n")
        print(f"[prompt {len(res.prompt_tokens)} tokens at {res.prefill_tok_s:.1f} tok/s, "
              f"generated {len(res.tokens)} at {res.decode_tok_s:.1f} tok/s, {res.finish_reason}]", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace, model: Model, tok: Tokenizer) -> int:
    template = ChatTemplate.from_model(model, tok)
    config = _config(args)
    history: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []
    print("radixserve chat: Ctrl-C stops an answer, Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        res = generate(model, tok, template.encode(history), config, on_text=_write)
        _write("\n")
        history.append({"role": "assistant", "content": res.text})


def cmd_info(model: Model) -> int:
    print(f"model    {model.path}")
    print(f"kernels  {model.kernels}, threads {model.threads}")
    for name in model.hparams.__dataclass_fields__:
        print(f"{name:15} {getattr(model.hparams, name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "serve":
        return cmd_serve(args)
    t0 = time.perf_counter()
    try:
        model = Model(args.model, threads=args.threads)
        tok = Tokenizer.from_model(model)
    except (ModelNotFoundError, EngineError, TokenizerError) as e:
        print(f"radixserve: {e}", file=sys.stderr)
        return EXIT_USAGE
    load_s = time.perf_counter() - t0
    try:
        if args.cmd == "info":
            return cmd_info(model)
        if args.cmd == "tokenize":
            ids = tok.encode(args.text, parse_special=args.special)
            print(json.dumps(ids) if args.json else " ".join(map(str, ids)))
            return 0
        if args.cmd == "chat":
            return cmd_chat(args, model, tok)
        return cmd_generate(args, model, tok, load_s)
    except (SamplingError, ChatTemplateError, PromptTooLongError, ValueError) as e:
        print(f"radixserve: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

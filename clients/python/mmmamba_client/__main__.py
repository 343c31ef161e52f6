"""python3 -m mmmamba_client: a terminal chat and a few one-shot commands.

    python3 -m mmmamba_client chat --image cat.jpg "what is this?"
    python3 -m mmmamba_client chat --system "Answer briefly."      # interactive
    python3 -m mmmamba_client complete "Once upon a time" --max-tokens 32
    python3 -m mmmamba_client models

chat streams each answer to the terminal as it is generated and keeps the
conversation's history, so every turn sees the earlier ones. With a prompt on
the command line and stdin not a terminal (or --once), it answers that and
exits; otherwise it reads further turns from stdin, one per line. In a turn,
"/image PATH" attaches an image to the next message, "/reset" forgets the
history, "/quit" (or end of input) leaves.
"""
import argparse
import sys

from . import Client, MmmambaError, user_message


def _params(args):
    p = {"max_tokens": args.max_tokens}
    for name in ("temperature", "top_p", "top_k", "seed"):
        v = getattr(args, name)
        if v is not None:
            p[name] = v
    return p


def _answer(client, args, history, text, images, out):
    """Sends one user turn with the history; streams the reply to out."""
    msg = user_message(text, images)
    messages = history + [msg]
    if args.no_stream:
        r = client.chat(messages, **_params(args))
        reply = r["choices"][0]["message"].get("content") or ""
        out.write(reply)
    else:
        parts = []
        with client.chat(messages, stream=True, **_params(args)) as s:
            for t in s.text():
                parts.append(t)
                out.write(t)
                out.flush()
        reply = "".join(parts)
    out.write("\n")
    out.flush()
    history.append(msg)
    history.append({"role": "assistant", "content": reply})


def cmd_chat(client, args):
    history = [{"role": "system", "content": args.system}] if args.system else []
    images = list(args.image or [])
    interactive_in = sys.stdin.isatty()
    if args.prompt:
        _answer(client, args, history, " ".join(args.prompt), images, sys.stdout)
        images = []
        if args.once or not interactive_in:
            return 0
    while True:
        if interactive_in:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history = [{"role": "system", "content": args.system}] if args.system else []
            continue
        if line.startswith("/image "):
            images.append(line[7:].strip())
            continue
        _answer(client, args, history, line, images, sys.stdout)
        images = []


def cmd_complete(client, args):
    prompt = " ".join(args.prompt)
    if args.no_stream:
        r = client.completions(prompt, **_params(args))
        sys.stdout.write(r["choices"][0]["text"] + "\n")
        return 0
    with client.completions(prompt, stream=True, **_params(args)) as s:
        for t in s.text():
            sys.stdout.write(t)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_models(client, args):
    for m in client.models():
        print(m["id"])
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m mmmamba_client",
                                 description="Chat with an mmmambad (OpenAI-compatible) server.")
    ap.add_argument("--base-url", help="server root (env MMMAMBA_BASE_URL; "
                    "default http://127.0.0.1:8000)")
    ap.add_argument("--api-key", help="API key (env MMMAMBA_API_KEY or OPENAI_API_KEY)")
    ap.add_argument("--model", help="model (default: the server's first)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("chat", "complete"):
        p = sub.add_parser(name)
        p.add_argument("prompt", nargs="*")
        p.add_argument("--max-tokens", type=int, default=512)
        p.add_argument("--temperature", type=float)
        p.add_argument("--top-p", type=float)
        p.add_argument("--top-k", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
        if name == "chat":
            p.add_argument("--system", help="a system prompt")
            p.add_argument("--image", action="append", metavar="PATH",
                           help="attach an image to the first message (repeatable)")
            p.add_argument("--once", action="store_true", help="answer the prompt and exit")
    sub.add_parser("models")
    args = ap.parse_args(argv)
    client = Client(args.base_url, args.api_key, args.model, args.timeout)
    try:
        return {"chat": cmd_chat, "complete": cmd_complete, "models": cmd_models}[args.cmd](
            client, args)
    except MmmambaError as e:
        sys.stderr.write("error: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`midilm serve`: load the models once, bind the port, and serve the API and the studio with uvicorn."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from midilm.errors import MidilmError


class ServeError(MidilmError):
    """The server cannot start (port taken, model missing); shown as one line by the CLI."""


def _load_t2m(args):
    """The text-to-MIDI model on the chosen backend; one readable error when it cannot load."""
    from midilm.generate.load import default_model_path, load_model

    path = Path(args.model) if args.model else default_model_path()
    if not path.is_dir():
        hint = "" if args.model else " (no default model is shipped in this install: pass --model DIR)"
        raise ServeError(f"model directory not found: {path}{hint}")
    if args.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ServeError("the vllm backend needs the vllm package and a GPU (pip install 'midilm[vllm]')") from None
    if args.backend == "transformers":
        import torch

        torch.set_num_threads(args.threads)
    return load_model(path, backend=args.backend, device=args.device, dtype=args.dtype)


def _devices(args) -> tuple[str | None, str | None]:
    """(text-to-MIDI device, understanding device), each checked before anything loads."""
    from midilm.cli_common import check_device

    device = check_device(args.device)
    if args.understanding_device is None:
        return device, device
    return device, check_device(args.understanding_device, "--understanding-device")


def _load_understanding(args) -> tuple[object | None, str | None, str | None]:
    """(model, path, why not): a missing default model is not an error, a failing --understanding-model is."""
    if args.no_understanding:
        return None, None, "disabled with --no-understanding"
    explicit = args.understanding_model
    try:
        from midilm.understand import load_understanding_model
    except ImportError as e:
        if explicit:
            raise ServeError(f"cannot load the understanding model: {e}") from None
        return None, None, "this install has no midilm.understand"
    try:
        model = load_understanding_model(explicit, device=args.understanding_device or "cpu", dtype=args.dtype)
    except Exception as e:  # the shipped default may be absent in this install: serve without it
        if explicit:
            raise ServeError(f"cannot load the understanding model {explicit}: {e}") from None
        return None, None, f"{type(e).__name__}: {e}"
    path = explicit or getattr(model, "path", None) or "midilm-understand-tiny"
    return model, str(path), None


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(256)
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from midilm.serve.app import Models, create_app
    from midilm.serve.schemas import Limits

    limits = Limits(max_tokens=args.max_tokens, default_tokens=min(1024, args.max_tokens),
                    max_samples=args.max_samples, max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                    timeout=args.timeout, queue_size=args.queue_size, max_batch=args.max_batch)
    args.device, args.understanding_device = _devices(args)
    sock = _bind(args.host, args.port)  # before loading: a taken port fails in a second, not after the models
    t2m = _load_t2m(args)
    understanding, upath, why = _load_understanding(args)
    if why:
        print(f"midilm serve: understanding model not available ({why}): /v1/describe and /v1/ask answer 503",
              file=sys.stderr)
    app = create_app(Models(t2m=t2m, t2m_backend=args.backend, understanding=understanding,
                            understanding_path=upath, understanding_error=why, t2m_device=args.device,
                            understanding_device=args.understanding_device), limits)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"midilm serve: studio at http://{shown}:{port}/ , API docs at http://{shown}:{port}/docs", file=sys.stderr,
          flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _positive(kind, upper):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value <= upper:
            raise argparse.ArgumentTypeError(f"must be in (0, {upper}], got {text}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0: any free port), got {text}")
    return value


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API and the web studio")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--model", metavar="PATH", help="text-to-MIDI model directory (default: the shipped one)")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                   help="what runs the text-to-MIDI model (vllm: GPU machines with the vllm extra)")
    p.add_argument("--understanding-model", metavar="PATH", default=None,
                   help="MIDI understanding model directory (default: the shipped one, if present)")
    p.add_argument("--no-understanding", action="store_true", help="serve without the understanding model")
    p.add_argument("--device", default=None,
                   help="where the models run: cpu, cuda, cuda:1, mps, ... (default: cpu); checked at start")
    p.add_argument("--understanding-device", default=None, metavar="DEVICE",
                   help="where the understanding model runs, if not on --device")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                   help="the models' precision (default: fp32 on a CPU; on a GPU bf16 where it has it)")
    p.add_argument("--threads", type=_positive(int, 256), default=1, help="CPU threads for the model (default 1)")
    p.add_argument("--max-tokens", type=_positive(int, 100_000), default=4096, help="largest max_tokens accepted")
    p.add_argument("--max-samples", type=_positive(int, 64), default=8, help="largest n accepted")
    p.add_argument("--max-upload-mb", type=_positive(float, 1024), default=2.0, help="largest upload (MiB)")
    p.add_argument("--timeout", type=_positive(float, 86400), default=120.0, help="seconds per request")
    p.add_argument("--queue-size", type=_positive(int, 100_000), default=64, help="requests waiting per model")
    p.add_argument("--max-batch", type=_positive(int, 256), default=16, help="generate requests batched together")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)

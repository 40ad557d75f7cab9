"""`midilm convert ...`: bring models trained elsewhere into our layout (MusicBERT fairseq checkpoints)."""

from __future__ import annotations

import argparse
import sys


def cmd_convert_musicbert(args: argparse.Namespace) -> int:
    from midilm.models.musicbert_convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.output)
    print(f"wrote the converted MusicBERT to {out}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert models from other code bases to midilm's layout")
    csub = p.add_subparsers(dest="convert_command", metavar="KIND", parser_class=type(p))
    q = csub.add_parser("musicbert", help="an original MusicBERT fairseq checkpoint (.pt, read without unpickling)")
    q.add_argument("checkpoint", metavar="CHECKPOINT.pt")
    q.add_argument("-o", "--output", required=True, metavar="DIR", help="model folder to write")
    q.set_defaults(func=cmd_convert_musicbert)

"""``ociforge key generate``: a cosign key pair (``cosign.key`` encrypted, ``cosign.pub``).

The password comes from ``$COSIGN_PASSWORD``, else a prompt (twice). cosign reads both files, and
``ociforge sign``/``verify`` read keys that ``cosign generate-key-pair`` wrote.
"""

from __future__ import annotations

from ..supply import keys


def register(sub) -> None:
    p = sub.add_parser("key", help="cosign key pairs for signing images")
    ksub = p.add_subparsers(dest="key_command", metavar="ACTION")
    g = ksub.add_parser("generate", help="write PREFIX.key (encrypted) and PREFIX.pub")
    g.add_argument(
        "--output-key-prefix", default="cosign", metavar="PREFIX", help="default: cosign"
    )
    g.add_argument("--force", action="store_true", help="replace existing files")
    g.set_defaults(func=run_generate)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_generate(args) -> int:
    key_path, pub_path = keys.generate_key_pair(args.output_key_prefix, force=args.force)
    print(f"Private key written to {key_path}")
    print(f"Public key written to {pub_path}")
    return 0

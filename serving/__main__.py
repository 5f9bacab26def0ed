"""``python -m radpipe.serving --model_dir /mnt/models --model_name chest-ct``: the predictor container's command.

KServe's storage initializer downloads the InferenceService's ``storageUri`` (the registered version's
MLflow model folder) into ``/mnt/models``; ``--model_dir`` also takes ``models:/chest-ct@champion``
(with ``MLFLOW_TRACKING_URI`` set), ``runs:/...``, ``s3://...`` or a local folder. Every flag of KServe's
model server (``--http_port``, ``--grpc_port``, ``--enable_grpc``, ...) works as it does for KServe's own
servers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import kserve

from radpipe.errors import RadpipeError
from radpipe.serving.options import add_limit_args, limits_from

parser = argparse.ArgumentParser(
    prog="python -m radpipe.serving",
    parents=[kserve.model_server.parser],
    description="radpipe's KServe predictor: Open Inference Protocol V2 and KServe V1 over REST.",
)
parser.add_argument(
    "--model_dir",
    required=True,
    help="model folder (KServe mounts storageUri at /mnt/models) or a URI: models:/NAME@ALIAS, runs:/..., s3://...",
)
add_limit_args(parser)


def main(argv: Sequence[str] | None = None) -> int:
    from radpipe.serving.app import load_model, run

    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = parser.parse_known_args(argv)
    named = any(a == "--model_name" or a.startswith("--model_name=") for a in argv)
    if args.workers != 1:
        print("error: --workers must be 1 (the model lives in one process); scale with replicas", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model_dir, args.model_name if named else None, limits_from(args), args.max_batch_size)
    except RadpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run(model, http_port=args.http_port, enable_grpc=args.enable_grpc, grpc_port=args.grpc_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

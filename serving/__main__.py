"""``python -m radpipe.serving --model_dir /mnt/models --model_name chest-ct``: the predictor container's command.

KServe's storage initializer downloads the InferenceService's ``storageUri`` (the registered version's
MLflow model folder) into ``/mnt/models``; ``--model_dir`` also takes ``models:/chest-ct@champion``
(with ``MLFLOW_TRACKING_URI`` set), ``runs:/...``, ``s3://...`` or a local folder. Every flag of KServe's
model server (``--http_port``, ``--grpc_port``, ``--enable_grpc``, ...) works as it does for KServe's own
servers. It listens on ``--host`` (default 127.0.0.1, this machine only); the serving image's entry point
passes ``--host=0.0.0.0``, the pod's interfaces.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import kserve

from radpipe.errors import RadpipeError
from radpipe.serving.options import add_limit_args, add_server_args, limits_from, model_version_from

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
add_server_args(parser)


def main(argv: Sequence[str] | None = None) -> int:
    from radpipe.serving.access import AccessPolicy

    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = parser.parse_known_args(argv)
    named = any(a == "--model_name" or a.startswith("--model_name=") for a in argv)
    if args.workers != 1:
        print("error: --workers must be 1 (the model lives in one process); scale with replicas", file=sys.stderr)
        return 2
    try:  # the flags first: a mistake is reported in a second, not after TensorFlow has loaded
        limits = limits_from(args)
        policy = AccessPolicy.from_files(args.auth_token_file, args.enable_repository_api, args.repository_token_file)
        version = model_version_from(args)
        from radpipe.serving.app import load_model, run

        model = load_model(
            args.model_dir,
            args.model_name if named else None,
            limits,
            args.max_batch_size,
            model_version=version,
            decode_workers=args.decode_workers,
        )
    except RadpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run(
        model,
        http_port=args.http_port,
        enable_grpc=args.enable_grpc,
        grpc_port=args.grpc_port,
        host=args.host,
        policy=policy,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

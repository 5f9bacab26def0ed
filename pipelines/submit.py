"""Submit the compiled pipeline to Kubeflow Pipelines, wait for it, and print the run's URL (``make submit``).

    python -m radpipe.pipelines.submit --host http://localhost:8080 --data s3://radpipe/data/chest-ct

What it submits is the checked-in ``pipelines/radpipe-training.yaml`` (or ``--package``), the same file a
user uploads in the KFP UI. Run parameters are the package's defaults unless ``--config``/``--set``/
``--data`` are given; then the whole configuration is validated here first, like ``radpipe run`` does,
and passed as the run's parameters.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radpipe.errors import RadpipeError
from radpipe.pipelines.compile import COMPILED_PIPELINE

DEFAULT_HOST = "http://localhost:8080"  # kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
HOST_ENV = "KFP_HOST"
SUCCEEDED = "SUCCEEDED"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m radpipe.pipelines.submit", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument(
        "--host", default=os.environ.get(HOST_ENV, DEFAULT_HOST), help=f"KFP API/UI address (${HOST_ENV})"
    )
    parser.add_argument("--package", default=str(COMPILED_PIPELINE), help="compiled pipeline YAML to submit")
    parser.add_argument("--experiment", default="radpipe", help="KFP experiment (created if missing)")
    parser.add_argument("--run-name", default="", help="default: radpipe-<UTC time>")
    parser.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs only)")
    parser.add_argument("--data", metavar="URI", help="data set, e.g. s3://radpipe/data/chest-ct (MinIO)")
    parser.add_argument("--config", metavar="FILE", help="YAML config file (see docs/configuration.md)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds to wait for the run (default 4 h)")
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="print the run URL and return")
    return parser


def run_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The run's parameters: empty (the package's defaults) unless the user configured something."""
    if not (args.config or args.set or args.data):
        return {}
    from radpipe.cli import _load_config

    config = _load_config(args)
    return config.pipeline_arguments()


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def _unreachable(host: str, exc: Exception) -> RadpipeError:
    detail = str(getattr(exc, "reason", None) or exc).rsplit(": ", 1)[-1].rstrip(")'\"")  # "[Errno 111] ..."
    return RadpipeError(
        f"cannot reach Kubeflow Pipelines at {host} ({detail}); "
        "start `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80` or pass --host / set KFP_HOST"
    )


def submit(args: argparse.Namespace) -> int:
    package = Path(args.package)
    if not package.is_file():
        raise RadpipeError(f"{package} does not exist; compile the pipeline first (make compile)")
    arguments = run_arguments(args)
    run_name = args.run_name or time.strftime("radpipe-%Y%m%d-%H%M%S", time.gmtime())

    import warnings

    import kfp
    import urllib3.exceptions
    from kfp_server_api.exceptions import ApiException

    network_errors = (urllib3.exceptions.HTTPError, OSError)
    # kfp.Client warns that it needs a KFP backend >= 2.0.0-beta.2 on every use; the cluster runs 2.17.0.
    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    try:
        client = kfp.Client(host=args.host, namespace=args.namespace)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=args.experiment,
            namespace=args.namespace,
        )
    except network_errors as exc:
        raise _unreachable(args.host, exc) from exc
    except ApiException as exc:
        raise RadpipeError(f"Kubeflow Pipelines at {args.host} refused the run: {exc.status} {exc.reason}") from exc
    url = run_url(args.host, run.run_id)
    print(f"submitted  {run_name} ({package.name}) to experiment {args.experiment}")
    print(f"run        {url}", flush=True)
    if not args.wait:
        return 0
    started = time.monotonic()
    try:
        finished = client.wait_for_run_completion(run.run_id, timeout=args.timeout, sleep_duration=10)
    except network_errors as exc:
        raise _unreachable(args.host, exc) from exc
    except TimeoutError as exc:
        raise RadpipeError(f"the run did not finish within {args.timeout} s; follow it at {url}") from exc
    state = str(finished.state)
    print(f"state      {state} after {time.monotonic() - started:.0f} s")
    print(f"run        {url}")
    return 0 if state == SUCCEEDED else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return submit(args)
    except RadpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the run goes on in Kubeflow Pipelines)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

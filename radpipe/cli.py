"""``radpipe``: the one command line of the project.

Each subcommand is a ``cmd_<name>`` function below, registered in :func:`build_parser`. Exit statuses
(:data:`EXIT_STATUSES`, docs/development.md): 0 done; 1 ``predict`` could not read some images; 2 an error
a user can fix (:class:`radpipe.errors.RadpipeError`, printed as ``error: ...``, and argparse's usage
errors); 3 ``run --require-challenger`` and the new version failed the gate; 130 interrupted; 128 + N
stopped by signal N (SIGTERM: 143). Anything else is a bug and keeps its traceback.

Logging: every module logs through ``logging.getLogger(__name__)``; the command line shows warnings,
``-v`` adds the info records, ``-vv`` or ``--log-level DEBUG`` everything (``RADPIPE_LOG_LEVEL`` when
no flag is given).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from radpipe import __version__
from radpipe.errors import RadpipeError, Terminated

LOG_LEVEL_ENV = "RADPIPE_LOG_LEVEL"
EXIT_GATE_FAILED = 3
EXIT_STATUSES = {
    0: "done (run: a version was registered, whether or not it passed the gate)",
    1: "predict: some images could not be read (each has an error line in the output)",
    2: "an error you can fix: the message says what and how; also a command line argparse refused",
    EXIT_GATE_FAILED: "run --require-challenger: the new version failed the gate (no alias moved)",
    130: "interrupted (Ctrl-C)",
    143: "stopped by SIGTERM (128 + the signal; SIGHUP 129): run stops its tasks and marks its MLflow runs FAILED",
}


class _Formatter(logging.Formatter):
    """``warning: ...`` like the command line's own ``error: ...``; info records as they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def log_level(args: argparse.Namespace) -> int:
    """--log-level, else -v/-vv, else $RADPIPE_LOG_LEVEL, else WARNING."""
    name = args.log_level
    if not name and args.verbose:
        name = "INFO" if args.verbose == 1 else "DEBUG"
    name = (name or os.environ.get(LOG_LEVEL_ENV) or "WARNING").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise RadpipeError(f"log level {name!r} (--log-level or ${LOG_LEVEL_ENV}): use DEBUG, INFO, WARNING or ERROR")
    return level


def configure_logging(level: int) -> None:
    """The process's one handler (stderr); library warnings only from -v on, where they are detail."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if level <= logging.INFO else logging.ERROR)


def _load_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from radpipe.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "data", None):
        overrides.append(f"data.uri={json.dumps(args.data)}")
    if getattr(args, "weights", None):
        overrides.append(f"model.weights={json.dumps(args.weights)}")
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline locally (kfp.local) and print what it registered."""
    config = _load_config(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from radpipe.model_uri import ModelUri
    from radpipe.pipelines.local_run import run_local
    from radpipe.registry import PASSED

    result = run_local(
        config,
        runner=args.runner,
        image_registry=args.image_registry,
        image_tag=args.image_tag,
        log_level=args.level,
    )
    registered = ModelUri.parse(result.model_uri)
    name, version = registered.name, str(registered.version)
    aliases, tags = _version_of(result.tracking_uri, name, version)
    lines = [
        "",
        f"registered   {result.model_uri}  (model '{name}', version {version})",
        f"gate         {result.gate}: {tags.get('radpipe.gate.reasons', '')}",
        f"aliases      {', '.join(aliases) if aliases else '(none moved)'}",
        f"candidate    {result.candidate}",
        f"test         accuracy {result.test_accuracy:.4f}   macro-F1 {result.test_macro_f1:.4f}",
        f"wall time    {result.seconds:.0f} s  ("
        + ", ".join(f"{task} {seconds:.0f} s" for task, seconds in result.task_seconds)
        + ")",
        f"tracking     {result.tracking_uri}",
        f"runner       {result.runner}",
    ]
    if result.tracking_uri.startswith("sqlite:"):
        lines.append(f"MLflow UI    mlflow ui --backend-store-uri {result.tracking_uri} --port 5000")
    if tags.get("radpipe.report"):
        lines.append(f"report       {tags['radpipe.report']}  (model card: {tags.get('radpipe.model_card', '-')})")
        if local := _local_artifact(tags["radpipe.report"]):
            lines.append(f"             {local}")
    lines.append(f"log          {result.log_path}")
    lines.append(f"versions     radpipe models {name}")
    lines.append(f"predict      radpipe predict models:/{name}@champion IMAGE_OR_FOLDER")
    print("\n".join(lines))
    if args.require_challenger and result.gate != PASSED:
        print(f"exit {EXIT_GATE_FAILED}: --require-challenger, and version {version} failed the gate", file=sys.stderr)
        return EXIT_GATE_FAILED
    return 0


def _local_artifact(uri: str) -> str:
    """The file behind a ``runs:/`` artifact URI where the store is on this machine, else ''."""
    import mlflow

    from radpipe import storage

    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    try:
        location = f"{mlflow.MlflowClient().get_run(run_id).info.artifact_uri}/{path}"
    except Exception:  # a path to show, not a reason to fail a finished run
        return ""
    local = location.startswith("/") or location.startswith("file:")  # not s3://, mlflow-artifacts:/, ...
    return str(storage.local_path(location)) if local else ""


def _version_of(tracking_uri: str, name: str, version: str) -> tuple[list[str], dict[str, str]]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.MlflowClient().get_model_version(name, version)
    return sorted(found.aliases), dict(found.tags or {})


def cmd_compile(args: argparse.Namespace) -> int:
    """Write the compiled pipeline YAML."""
    from radpipe.pipelines.compile import COMPILED_PIPELINE, compile_pipeline

    config = _load_config(args)
    output = compile_pipeline(
        args.output or COMPILED_PIPELINE,
        config,
        image_registry=args.image_registry,
        image_tag=args.image_tag,
        cluster_env=args.cluster_env,
    )
    print(f"wrote {output}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective config (defaults <- --config FILE <- --set overrides) as YAML."""
    from radpipe.config import dump_config

    sys.stdout.write(dump_config(_load_config(args)))
    return 0


def _image_files(paths: Sequence[str]) -> Iterator[Path]:
    from radpipe.preprocessing import is_image_file

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            yield path
        else:
            raise RadpipeError(f"{raw} does not exist; pass image files or folders of images")


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify images with a registered or local model; one JSON line per image."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from radpipe import storage, tracking
    from radpipe.batches import batch_slices
    from radpipe.classifier import Classifier
    from radpipe.preprocessing import ImageError, check_pixels

    if args.model_uri.startswith(("models:/", "runs:/")):
        import mlflow

        mlflow.set_tracking_uri(tracking.resolve_tracking_uri(allow_embedded=True))
    classifier = Classifier.load(args.model_uri)
    files = list(_image_files(args.paths))
    if not files:
        raise RadpipeError("no image files found in the given paths")
    lines, failures = [], 0
    for part in batch_slices(len(files), args.batch_size):
        chunk = files[part]
        arrays, ok = [], []
        for path in chunk:
            try:
                check_pixels(path, args.max_image_pixels, "--max-image-pixels")  # from the header, before decoding
                arrays.append(classifier.preprocess(path))
                ok.append(path)
            except ImageError as exc:
                failures += 1
                lines.append(json.dumps({"path": str(path), "error": str(exc)}))
                print(f"warning: {exc}", file=sys.stderr)
        if arrays:
            predictions = classifier.to_predictions(classifier.predict_arrays(arrays))
            lines.extend(
                json.dumps({"path": str(p), **pred.to_dict()}) for p, pred in zip(ok, predictions, strict=True)
            )
    text = "\n".join(lines) + "\n"
    if args.output:
        storage.atomic_write_text(args.output, text)
        print(f"wrote {len(lines)} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if failures else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model over KServe's V1 and Open Inference Protocol V2 REST APIs, with an upload page."""
    from radpipe.serving.access import AccessPolicy
    from radpipe.serving.options import limits_from, model_version_from

    # The flags first: a mistake is reported in a second, not after KServe and TensorFlow have loaded.
    limits = limits_from(args)
    policy = AccessPolicy.from_files(args.auth_token_file, args.enable_repository_api, args.repository_token_file)
    version = model_version_from(args)
    from radpipe.serving import require_kserve

    require_kserve()
    from radpipe.serving.app import load_model, run

    model = load_model(
        args.model_uri,
        args.model_name,
        limits,
        args.max_batch_size,
        allow_embedded_tracking=True,
        model_version=version,
        decode_workers=args.decode_workers,
    )
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    shown = "localhost" if loopback or args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{shown}:{args.port}"
    where = "this machine only" if loopback else f"{args.host}: other machines can reach it"
    served = f"version {model.version}" if model.version else "version unknown"
    print(
        f"serving '{model.name}' ({served}) on {base} ({where}; {policy.describe()})\n"
        f"  upload page  {base}/ui/\n"
        f"  V2 infer     POST {base}/v2/models/{model.name}/infer\n"
        f"  V1 predict   POST {base}/v1/models/{model.name}:predict\n"
        f"  metrics      {base}/metrics",
        file=sys.stderr,
        flush=True,
    )
    run(model, http_port=args.port, host=args.host, policy=policy)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Render the KServe InferenceService serving a registered model version (by alias or number)."""
    import mlflow

    from radpipe import deployment, tracking
    from radpipe.images import DEFAULT_TAG, SERVING_IMAGE, image_ref

    ref = deployment.ModelRef.parse(args.model)
    uri = tracking.resolve_tracking_uri(allow_embedded=True)
    mlflow.set_tracking_uri(uri)
    served = deployment.resolve(ref, args.artifacts_destination, args.storage_uri)
    image = args.image
    if not image and (args.image_registry or args.image_tag):
        image = image_ref(SERVING_IMAGE, args.image_registry, args.image_tag or DEFAULT_TAG)
    manifest = deployment.render_inference_service(
        served, name=args.name, namespace=args.namespace, image=image, service_account=args.service_account
    )
    if served.warning:
        print(f"warning: {served.warning}", file=sys.stderr)
    if args.output in (None, "-"):
        sys.stdout.write(deployment.to_yaml(manifest, served.warning))
    else:
        path = deployment.write_manifest(manifest, args.output, served.warning)
        print(f"wrote {path}", file=sys.stderr)
    print(
        f"{ref.uri} (registry {uri}) is version {served.version}; InferenceService "
        f"{manifest['metadata']['name']} serves {served.storage_uri}",
        file=sys.stderr,
    )
    if args.docker:
        _serve_in_docker(manifest, served, args.port)
    return 0


def _serve_in_docker(manifest: dict, served, port: int) -> None:  # type: ignore[no-untyped-def]
    """``deploy --docker``: the manifest's predictor container on this machine, until Ctrl-C."""
    import signal
    import tempfile

    from radpipe import local_deploy, storage

    with tempfile.TemporaryDirectory(prefix="radpipe-mnt-models-") as tmp:
        if storage.scheme(served.storage_uri) == "file":
            model_dir = storage.local_path(served.storage_uri)
        else:  # what KServe's storage initializer does before the predictor starts
            model_dir = storage.fetch(served.storage_uri, tmp, label="storage-initializer")
        os.chmod(tmp, 0o755)  # the predictor runs as 10001
        predictor = local_deploy.start(manifest, model_dir, port)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # docker stop, kill: clean up too
        try:
            container = local_deploy.predictor_container(manifest)
            seconds = predictor.wait_ready(container.get("readinessProbe"))
            name = served.name
            print(
                f"ready in {seconds:.1f} s: {container['image']} serving models:/{name}/{served.version}\n"
                f"  V2 infer     POST {predictor.url}/v2/models/{name}/infer\n"
                f"  upload page  {predictor.url}/ui/\n"
                "Ctrl-C stops and removes the container",
                file=sys.stderr,
                flush=True,
            )
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            predictor.stop()


def _registry_call(action):  # type: ignore[no-untyped-def]
    """Run ``action(client)`` against the configured registry; MLflow's own failures become clear errors."""
    from radpipe import registry, tracking

    uri = tracking.resolve_tracking_uri(allow_embedded=True)
    print(f"registry: {uri}", file=sys.stderr)  # which store was found (stderr: --json output stays JSON)
    try:
        return action(registry.command_client(uri))
    except Exception as exc:
        failure = registry.store_failure(exc)
        if failure is None:
            raise
        raise RadpipeError(
            f"the MLflow registry at {uri} failed: {failure}; check that it runs and MLFLOW_TRACKING_URI"
        ) from exc


def cmd_models(args: argparse.Namespace) -> int:
    """List a registered model's versions with aliases, gate outcome and key test metrics (or all models)."""
    from radpipe import registry

    if not args.name:
        models = _registry_call(registry.list_models)
        if args.json:
            print(json.dumps([{"name": n, "aliases": a} for n, a in models], indent=2))
        else:
            rows = [[n, ", ".join(f"{k}={v}" for k, v in sorted(a.items())) or "-"] for n, a in models]
            print(registry.table(["NAME", "ALIASES"], rows) if rows else "no registered models")
        return 0
    rows = _registry_call(lambda c: registry.list_versions(c, args.name))
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(registry.versions_table(rows) if rows else f"{args.name} has no versions")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Point an alias (default: champion) at a version; the version it replaces is remembered for rollback."""
    from radpipe import registry

    move = _registry_call(
        lambda c: registry.promote(
            c, args.name, args.to, version=args.version, from_alias=args.from_alias, force=args.force
        )
    )
    print(move.describe())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Point an alias (default: champion) back at the version it held before the last promote."""
    from radpipe import registry

    move = _registry_call(lambda c: registry.rollback(c, args.name, args.alias))
    print(move.describe())
    return 0


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (see docs/configuration.md)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. --set train.epochs=5"
    )


def _common_options() -> argparse.ArgumentParser:
    """-v and --log-level, which work before and after the command: `radpipe -v run`, `radpipe run -v`."""
    common = argparse.ArgumentParser(add_help=False)
    logs = common.add_argument_group("logging")
    logs.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more detail: -v the info records (every task's, for run), -vv everything",
    )
    logs.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help=f"what reaches the terminal (default: ${LOG_LEVEL_ENV}, else WARNING); run's log file has all",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    from radpipe.config import DEFAULT_MAX_IMAGE_PIXELS

    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="radpipe",
        description="MLOps pipeline for medical image classification (KFP, MLflow, KServe).",
        parents=[common],
        epilog="exit statuses: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_STATUSES.items()),
    )
    parser.add_argument("--version", action="version", version=f"radpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **kwargs)

    run = command("run", help="run the pipeline locally through kfp.local", description=cmd_run.__doc__)
    run.add_argument("--data", metavar="PATH_OR_URI", help="image folder, s3:// prefix or .zip/.tar.gz URL")
    run.add_argument("--weights", metavar="PATH_OR_URI", help="backbone weights file ('imagenet' or 'none' too)")
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: every task in this Python (default); docker: every task in its stage image "
        "(make images), as on a cluster",
    )
    run.add_argument("--image-registry", default="", help="--runner docker: prefix of the stage images")
    run.add_argument("--image-tag", default=__version__, help="--runner docker: tag of the stage images")
    run.add_argument(
        "--require-challenger",
        action="store_true",
        help=f"exit {EXIT_GATE_FAILED} when the new version fails the gate (default: exit 0, the version is "
        "registered without aliases either way)",
    )
    _add_config_args(run)
    run.set_defaults(func=cmd_run)

    comp = command("compile", help="write the compiled pipeline YAML", description=cmd_compile.__doc__)
    comp.add_argument("--output", "-o", metavar="FILE", help="default: the checked-in pipelines/radpipe-training.yaml")
    comp.add_argument("--image-registry", default="", help="prefix of the stage images, e.g. ghcr.io/acme")
    comp.add_argument("--image-tag", default=__version__, help="tag of the stage images")
    comp.add_argument(
        "--no-cluster-env",
        dest="cluster_env",
        action="store_false",
        help="do not wire tasks to the radpipe-pipeline-env ConfigMap and radpipe-s3 Secret (manifests/)",
    )
    _add_config_args(comp)
    comp.set_defaults(func=cmd_compile)

    conf = command("config", help="print the effective config as YAML", description=cmd_config.__doc__)
    _add_config_args(conf)
    conf.set_defaults(func=cmd_config)

    pred = command("predict", help="classify images with a model", description=cmd_predict.__doc__)
    pred.add_argument("model_uri", metavar="MODEL_URI", help="e.g. models:/chest-ct@champion, or a model folder")
    pred.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pred.add_argument("--output", "-o", metavar="FILE", help="write JSON lines here instead of stdout")
    pred.add_argument(
        "--batch-size", type=int, default=32, help="images per model call (default 32): lower it to use less memory"
    )
    pred.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help=f"refuse images with more pixels than this, read from their headers before decoding (default "
        f"{DEFAULT_MAX_IMAGE_PIXELS}, as data.max_image_pixels and serve --max-image-pixels)",
    )
    pred.set_defaults(func=cmd_predict)

    serve = command("serve", help="serve a model over HTTP (KServe V1/V2, upload page)", description=cmd_serve.__doc__)
    serve.add_argument("model_uri", metavar="MODEL_URI", help="e.g. models:/chest-ct@champion, or a model folder")
    serve.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080, KServe's)")
    from radpipe.serving.options import add_limit_args, add_server_args, flag

    serve.add_argument(
        *flag("model_name"), help="name in the URLs (default: the registered model's name, else 'model')"
    )

    add_limit_args(serve)
    add_server_args(serve)
    serve.set_defaults(func=cmd_serve)

    dep = command(
        "deploy", help="render the KServe InferenceService for a registered model", description=cmd_deploy.__doc__
    )
    dep.add_argument("model", metavar="NAME@ALIAS", help="e.g. chest-ct@champion, chest-ct/3 (MLFLOW_TRACKING_URI)")
    dep.add_argument(
        "--output", "-o", metavar="PATH", help="a file, or a folder such as manifests/overlays/kind/ (default: stdout)"
    )
    dep.add_argument("--name", default="", help="InferenceService name (default: NAME-ALIAS, e.g. chest-ct-champion)")
    dep.add_argument("--namespace", default="radpipe")
    dep.add_argument("--service-account", default="radpipe-kserve", help="bound to the S3 secret KServe reads with")
    dep.add_argument("--image", default="", help="serving image (default: $RADPIPE_SERVING_IMAGE or radpipe-serving)")
    dep.add_argument("--image-registry", default="", help="prefix of the serving image, e.g. ghcr.io/acme")
    dep.add_argument("--image-tag", default="", help=f"tag of the serving image (default: {__version__})")
    dep.add_argument(
        "--docker",
        action="store_true",
        help="also run the manifest's predictor container here, as KServe would (make images first)",
    )
    dep.add_argument("--port", type=int, default=8080, help="--docker: the host port on 127.0.0.1 (default 8080)")
    dep.add_argument(
        "--storage-uri",
        default="",
        metavar="URI",
        help="where KServe fetches the version's files (s3://, gs://, pvc://, https://...), e.g. a copy of a "
        "local run's model folder; default: located through the registry",
    )
    dep.add_argument(
        "--artifacts-destination",
        default="",
        help="the MLflow server's --artifacts-destination (default: $RADPIPE_MLFLOW_ARTIFACTS_DESTINATION "
        "or s3://mlflow/artifacts)",
    )
    dep.set_defaults(func=cmd_deploy)

    models = command("models", help="list registered versions, aliases and metrics", description=cmd_models.__doc__)
    models.add_argument("name", nargs="?", metavar="NAME", help="registered model name (default: list all models)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=cmd_models)

    promote = command("promote", help="move an alias (champion) to a version", description=cmd_promote.__doc__)
    promote.add_argument("name", metavar="NAME", help="registered model name, e.g. chest-ct")
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", metavar="N", help="the version to promote")
    which.add_argument("--from", dest="from_alias", metavar="ALIAS", help="promote the version ALIAS points at")
    promote.add_argument("--to", default="champion", metavar="ALIAS", help="the alias to move (default: champion)")
    promote.add_argument(
        "--force", action="store_true", help="promote even a version that failed the gate or did not complete"
    )
    promote.set_defaults(func=cmd_promote)

    rollback = command("rollback", help="move champion back to the previous one", description=cmd_rollback.__doc__)
    rollback.add_argument("name", metavar="NAME", help="registered model name")
    rollback.add_argument("--alias", default="champion", help="the alias to roll back (default: champion)")
    rollback.set_defaults(func=cmd_rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", 0)
    args.log_level = getattr(args, "log_level", None)
    try:
        args.level = log_level(args)
        configure_logging(args.level)
        return int(args.func(args) or 0)
    except RadpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"radpipe: {exc}; stopped its tasks and removed their temporary files", file=sys.stderr)
        return 128 + exc.signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

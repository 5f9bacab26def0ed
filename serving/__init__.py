"""Serving: the registered model behind KServe's Open Inference Protocol, on a laptop and in a cluster.

KServe's own MLflow runtime cannot load a Keras model, so radpipe ships a custom predictor in the style
of KServe's ``sklearnserver``: :class:`radpipe.serving.model.RadpipeModel` (a ``kserve.Model``) and
``python -m radpipe.serving --model_dir ...``. ``radpipe serve MODEL_URI`` runs the same code locally.

The model is loaded and preprocessed through :mod:`radpipe.classifier`, exactly as ``radpipe predict``
does, so a served answer equals a batch prediction.

This package imports without kserve; :func:`require_kserve` says how to install it when it is missing.
"""

from __future__ import annotations

from radpipe.errors import RadpipeError


def require_kserve() -> None:
    """Fail with an actionable message when the ``serve`` extra is not installed."""
    try:
        import kserve  # noqa: F401
    except ImportError as exc:
        raise RadpipeError(
            f"serving needs KServe's Python server, which is not installed ({exc}); "
            "install the serve extra: pip install 'radpipe[serve]'"
        ) from None

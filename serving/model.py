"""The KServe predictor: a ``kserve.Model`` over :class:`radpipe.classifier.Classifier`.

One code path for V1 and V2: ``preprocess`` decodes the request (images are decoded on a worker thread,
in memory), ``predict`` runs the micro-batched model and, when asked, Grad-CAM, and answers in the
protocol the request came in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from typing import Any

import numpy as np
from kserve import InferRequest, Model
from kserve.errors import InvalidInput
from PIL import Image

from radpipe.classifier import Classifier
from radpipe.gradcam import GradCam, overlay
from radpipe.progress import log
from radpipe.serving import metrics
from radpipe.serving.batcher import MicroBatcher
from radpipe.serving.protocol import (
    INPUT_NAME,
    OUTPUT_GRADCAM,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    Answer,
    Decoded,
    Limits,
    RequestError,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
)


def default_model_name(model_uri: str) -> str:
    """The name in the URLs: the registered model's name for ``models:/NAME@alias`` (or ``/version``)."""
    if model_uri.startswith("models:/"):
        name = model_uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
        if name and not name.startswith("m-"):  # models:/m-<id> is a logged model, not a registered name
            return name
    return "model"  # KServe's default for --model_name


class RadpipeModel(Model):
    """A radpipe image classifier behind the Open Inference Protocol."""

    def __init__(self, name: str, model_uri: str, limits: Limits | None = None, max_batch_size: int = 16) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.limits = limits or Limits()
        self.max_batch_size = max_batch_size
        self.classifier: Classifier | None = None
        self.gradcam: GradCam | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="radpipe-model")
        self._batcher: MicroBatcher | None = None
        self.ready = False

    # ------------------------------------------------------------------------------------ lifecycle

    def load(self) -> bool:
        """Load the model (raises :class:`radpipe.errors.ModelLoadError` with what to fix) and warm it up."""
        classifier = Classifier.load(self.model_uri)
        try:
            self.gradcam = GradCam(classifier.model, classifier.spec)
        except (ValueError, KeyError) as exc:
            log(f"serving: Grad-CAM is off for this model ({exc})")
            self.gradcam = None
        size = classifier.image_size
        # The first calls trace the graph (seconds); do it now, so that 'ready' means fast.
        for n in (1, 2):
            classifier.predict_arrays(np.zeros((n, size, size, 3), np.float32))
        self.classifier = classifier
        self._batcher = MicroBatcher(
            self._predict_fn,
            self._executor,
            self.max_batch_size,
            on_batch=metrics.BATCH_SIZE.labels(model=self.name).observe,
        )
        self.ready = True
        log(
            f"serving: model '{self.name}' from {self.model_uri}: classes {classifier.class_names}, "
            f"{size}x{size} px, backbone {classifier.spec.backbone}, Grad-CAM {'on' if self.gradcam else 'off'}"
        )
        return self.ready

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        super().stop()

    def _predict_fn(self, x: np.ndarray) -> np.ndarray:
        assert self.classifier is not None
        return self.classifier.predict_arrays(x)

    # ---------------------------------------------------------------------------------- OIP metadata

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = len(self.classifier.class_names) if self.classifier else -1
        return [
            {"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": [-1, classes]},
            {"name": OUTPUT_LABEL, "datatype": "BYTES", "shape": [-1]},
            {"name": OUTPUT_GRADCAM, "datatype": "BYTES", "shape": [-1]},
        ]

    def metadata(self) -> dict[str, Any]:
        """OIP model metadata plus what a client needs to read the answer: class names and preprocessing."""
        assert self.classifier is not None
        spec = self.classifier.spec
        size = spec.preprocessing.image_size
        return {
            "name": self.name,
            "versions": [],
            "platform": "keras",
            "inputs": [
                *self.get_input_types(),
                {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, size, size, 3]},
            ],
            "outputs": self.get_output_types(),
            "class_names": list(spec.class_names),
            "radpipe": {
                "model_uri": self.model_uri,
                "backbone": spec.backbone,
                "preprocessing": spec.preprocessing.to_dict(),
                "explain": self.gradcam is not None,
                "limits": {
                    "max_request_bytes": self.limits.max_request_bytes,
                    "max_image_pixels": self.limits.max_image_pixels,
                    "max_images": self.limits.max_images,
                },
            },
        }

    # ------------------------------------------------------------------------------------ inference

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess has already checked the request thoroughly

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Decoded:
        assert self.classifier is not None
        if isinstance(payload, Decoded):
            return payload
        assert self._batcher is not None
        token = self._batcher.expect()  # the batcher may wait for this request while it is decoded
        try:
            if isinstance(payload, InferRequest):
                decoded = await asyncio.to_thread(decode_v2, payload, self.classifier, self.limits)
            else:
                decoded = await asyncio.to_thread(decode_v1, payload, self.classifier, self.limits, False)
        except BaseException as exc:
            self._batcher.withdraw(token)
            if isinstance(exc, RequestError) and getattr(payload, "from_grpc", False):
                raise InvalidInput(str(exc)) from exc  # gRPC status INVALID_ARGUMENT with the same message
            raise
        decoded.batch_token = token
        decoded.from_grpc = bool(getattr(payload, "from_grpc", False))
        return decoded

    async def predict(self, payload: Decoded, headers: dict[str, str] | None = None, response_headers=None) -> Any:  # type: ignore[override]
        assert self.classifier is not None and self._batcher is not None
        probabilities = await self._batcher.predict(payload.images, token=payload.batch_token)
        answer = Answer(probabilities=np.asarray(probabilities, dtype=np.float32))
        if payload.explain:
            try:
                answer.gradcam_png = await self._explain(payload.images, answer.probabilities)
            except RequestError as exc:
                if payload.from_grpc:
                    raise InvalidInput(str(exc)) from exc
                raise
        metrics.IMAGES.labels(model=self.name).inc(len(payload.images))
        if payload.protocol == "v2":
            return encode_v2(payload, answer, self.classifier, self.name)
        return encode_v1(payload, answer, self.classifier)

    async def explain(self, payload: Decoded, headers: dict[str, str] | None = None) -> Any:
        """V1 ``:explain``: the prediction with a Grad-CAM overlay per image."""
        payload.explain = True
        return await self.predict(payload, headers)

    async def _explain(self, images: np.ndarray, probabilities: np.ndarray) -> list[bytes]:
        if self.gradcam is None:
            raise RequestError(
                "explain_unsupported",
                "this model cannot be explained: its record names no feature layer for Grad-CAM; ask without 'explain'",
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._overlays, images, probabilities.argmax(axis=1))

    def _overlays(self, images: np.ndarray, classes: np.ndarray) -> list[bytes]:
        assert self.gradcam is not None
        heatmaps = self.gradcam.heatmaps(np.asarray(images, np.float32), class_index=classes)
        pngs = []
        for image, heatmap in zip(images, heatmaps, strict=True):
            pixels = overlay(np.clip(image, 0, 255).astype(np.uint8), heatmap)
            buffer = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
        return pngs

"""The KServe predictor: a ``kserve.Model`` over :class:`radpipe.classifier.Classifier`.

One code path for V1 and V2: ``preprocess`` checks the request and decodes its images (in memory, one at
a time, on a small pool of decoder threads shared by all requests), ``predict`` runs the micro-batched
model and, when asked, Grad-CAM, and answers in the protocol the request came in.

The decoder pool bounds memory: at most ``--decode_workers`` full-size images exist at once, however many
requests arrive together, and each request decodes one image at a time, so that a large request does not
hold up small ones for longer than one image.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
from typing import Any

import numpy as np
from kserve import InferRequest, Model
from kserve.errors import InvalidInput, ModelNotReady
from PIL import Image

from radpipe.batches import batch_slices
from radpipe.classifier import Classifier
from radpipe.gradcam import GradCam, overlay
from radpipe.model_uri import ModelUri, is_model_uri
from radpipe.serving import memory, metrics
from radpipe.serving.batcher import MicroBatcher
from radpipe.serving.options import DEFAULT_DECODE_WORKERS
from radpipe.serving.protocol import (
    INPUT_NAME,
    OUTPUT_GRADCAM,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    Answer,
    Decoded,
    ImageFile,
    Limits,
    RequestError,
    decode_file,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
)

logger = logging.getLogger(__name__)


def default_model_name(model_uri: str) -> str:
    """The name in the URLs: the registered model's name for ``models:/NAME@alias`` (or ``/version``)."""
    if is_model_uri(model_uri):
        name = ModelUri.parse(model_uri).name
        if name and not name.startswith("m-"):  # models:/m-<id> is a logged model, not a registered name
            return name
    return "model"  # KServe's default for --model_name


def _decode(file: ImageFile, classifier: Classifier) -> np.ndarray:
    """:func:`decode_file`, then, after a large image, give the memory it took back to the system."""
    try:
        return decode_file(file, classifier)
    finally:
        if file.pixels >= memory.TRIM_AFTER_PIXELS:
            memory.release()


class RadpipeModel(Model):
    """A radpipe image classifier behind the Open Inference Protocol."""

    def __init__(
        self,
        name: str,
        model_uri: str,
        limits: Limits | None = None,
        max_batch_size: int = 16,
        version: str | None = None,
        decode_workers: int = DEFAULT_DECODE_WORKERS,
    ) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.version = version
        """The registered version served (``None`` when unknown); in metadata, answers and metric labels."""
        self.limits = limits or Limits()
        self.max_batch_size = max_batch_size
        self.decode_workers = decode_workers
        self.classifier: Classifier | None = None
        self.gradcam: GradCam | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._decoder: concurrent.futures.ThreadPoolExecutor | None = None
        self._batcher: MicroBatcher | None = None
        self.ready = False

    # ------------------------------------------------------------------------------------ lifecycle

    def load(self) -> bool:
        """Load the model (raises :class:`radpipe.errors.ModelLoadError` with what to fix) and warm it up."""
        classifier = Classifier.load(self.model_uri)
        try:
            self.gradcam = GradCam(classifier.model, classifier.spec)
        except (ValueError, KeyError) as exc:
            logger.info(f"serving: Grad-CAM is off for this model ({exc})")
            self.gradcam = None
        size = classifier.image_size
        # The first calls trace the graph (seconds); do it now, so that 'ready' means fast.
        for n in (1, 2):
            classifier.predict_arrays(np.zeros((n, size, size, 3), np.float32))
        self.classifier = classifier
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="radpipe-model")
        self._decoder = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.decode_workers, thread_name_prefix="radpipe-decode"
        )
        self._batcher = MicroBatcher(
            classifier.predict_arrays,
            self._executor,
            self.max_batch_size,
            on_batch=metrics.BATCH_SIZE.labels(model=self.name, version=self.version or "").observe,
        )
        self.ready = True
        version = f"version {self.version}" if self.version else "version unknown (pass --model_version)"
        logger.info(
            f"serving: model '{self.name}' ({version}) from {self.model_uri}: classes {classifier.class_names}, "
            f"{size}x{size} px, backbone {classifier.spec.backbone}, Grad-CAM {'on' if self.gradcam else 'off'}"
        )
        return self.ready

    def can_answer(self) -> bool:
        """Whether an inference request would be answered now (readiness means exactly this)."""
        return bool(self.ready and self.classifier is not None and self._batcher is not None)

    async def healthy(self) -> bool:
        return self.can_answer()

    def stop(self) -> None:
        """Take the model offline (server shutdown, or an unload through the repository API)."""
        self.ready = False
        for pool in (self._executor, self._decoder):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._executor = self._decoder = None
        self._batcher = None
        self.classifier = None
        self.gradcam = None
        super().stop()

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
            "versions": [self.version] if self.version else [],
            "platform": "keras",
            "inputs": [
                *self.get_input_types(),
                {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, size, size, 3]},
            ],
            "outputs": self.get_output_types(),
            "class_names": list(spec.class_names),
            "radpipe": {
                "model_uri": self.model_uri,
                "model_version": self.version,
                "backbone": spec.backbone,
                "preprocessing": spec.preprocessing.to_dict(),
                "explain": self.gradcam is not None,
                "limits": {
                    "max_request_bytes": self.limits.max_request_bytes,
                    "max_image_pixels": self.limits.max_image_pixels,
                    "max_request_pixels": self.limits.max_request_pixels,
                    "max_images": self.limits.max_images,
                },
            },
        }

    # ------------------------------------------------------------------------------------ inference

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess has already checked the request thoroughly

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Decoded:
        if isinstance(payload, Decoded):
            return payload
        classifier, batcher, decoder = self.classifier, self._batcher, self._decoder
        if classifier is None or batcher is None or decoder is None:
            raise ModelNotReady(self.name, "it is not loaded (unloaded through the repository API, or loading)")
        token = batcher.expect()  # the batcher may wait for this request while it is decoded
        try:
            if isinstance(payload, InferRequest):
                decoded = await asyncio.to_thread(decode_v2, payload, classifier, self.limits)
            else:
                decoded = await asyncio.to_thread(decode_v1, payload, classifier, self.limits, False)
            await self._decode_files(decoded, classifier, decoder)
        except BaseException as exc:
            batcher.withdraw(token)
            if isinstance(exc, RequestError) and getattr(payload, "from_grpc", False):
                raise InvalidInput(str(exc)) from exc  # gRPC status INVALID_ARGUMENT with the same message
            raise
        decoded.batch_token = token
        decoded.from_grpc = bool(getattr(payload, "from_grpc", False))
        return decoded

    async def _decode_files(
        self, decoded: Decoded, classifier: Classifier, decoder: concurrent.futures.Executor
    ) -> None:
        """Decode the request's image files into their rows, one at a time, on the shared decoder pool."""
        loop = asyncio.get_running_loop()
        try:
            for file in decoded.files:
                decoded.images[file.index] = await loop.run_in_executor(decoder, _decode, file, classifier)
        finally:
            decoded.files = []  # the file bytes are not needed any more

    async def predict(self, payload: Decoded, headers: dict[str, str] | None = None, response_headers=None) -> Any:  # type: ignore[override]
        classifier, batcher = self.classifier, self._batcher
        if classifier is None or batcher is None:
            raise ModelNotReady(self.name, "it is not loaded (unloaded through the repository API, or loading)")
        try:
            answer = await self._answer(payload, batcher)
        finally:
            if payload.pixels >= memory.TRIM_AFTER_PIXELS:  # after the decoding and model calls of a large request
                await asyncio.to_thread(memory.release)
        metrics.IMAGES.labels(model=self.name, version=self.version or "").inc(len(payload.images))
        if payload.protocol == "v2":
            return encode_v2(payload, answer, classifier, self.name, self.version)
        return encode_v1(payload, answer, classifier)

    async def _answer(self, payload: Decoded, batcher: MicroBatcher) -> Answer:
        probabilities = await batcher.predict(payload.images, token=payload.batch_token)
        answer = Answer(probabilities=np.asarray(probabilities, dtype=np.float32))
        if payload.explain:
            try:
                answer.gradcam_png = await self._explain(payload.images, answer.probabilities)
            except RequestError as exc:
                if payload.from_grpc:
                    raise InvalidInput(str(exc)) from exc
                raise
        return answer

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
        assert self._executor is not None
        return await loop.run_in_executor(self._executor, self._overlays, images, probabilities.argmax(axis=1))

    def _overlays(self, images: np.ndarray, classes: np.ndarray) -> list[bytes]:
        assert self.gradcam is not None
        # As for predictions: no model call on more images than that (GradCam also bounds each call's pixels).
        step = self.max_batch_size
        heatmaps = np.concatenate(
            [
                self.gradcam.heatmaps(np.asarray(images[part], np.float32), class_index=classes[part])
                for part in batch_slices(len(images), step)
            ]
        )
        pngs = []
        for image, heatmap in zip(images, heatmaps, strict=True):
            pixels = overlay(np.clip(image, 0, 255).astype(np.uint8), heatmap)
            buffer = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
        return pngs

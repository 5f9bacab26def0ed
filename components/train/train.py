"""train: fit the head on a frozen backbone, then optionally fine-tune the backbone's top layers.

Choices that matter for small medical data sets, and why:
- Augmentation runs inside a training-only wrapper model, so the saved model has none of it.
- BatchNormalization stays frozen while fine-tuning a pretrained backbone (statistics of a few hundred CT
  slices would wreck the ImageNet ones); Keras 3 runs a non-trainable BN layer in inference mode.
- The best epoch by validation loss is tracked across *both* phases: if fine-tuning never beats the
  frozen head, the frozen head is what we keep.
- Class weights counter imbalance (the chest CT train split has 3x more adenocarcinoma than normal).
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radpipe.components.train.augmentation import augmentation_layers
from radpipe.components.train.features import Copies, backbone_features, head_input_layer
from radpipe.config import TrainConfig
from radpipe.dataset import Split, load_split, read_manifest
from radpipe.errors import ConfigError, DataError
from radpipe.modelspec import REFIT_HEAD_FILE, ModelSpec, load_model_dir, save_model_dir
from radpipe.validation import validation_scores

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    spec: ModelSpec
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    val_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def training_model(model: Any, config: TrainConfig) -> Any:
    """``model`` behind the augmentation layers; shares its weights, is never saved."""
    import keras

    inputs = keras.Input(model.input_shape[1:], name="image", dtype="float32")
    x = inputs
    for layer in augmentation_layers(config.augmentation, config.seed):
        x = layer(x)
    return keras.Model(inputs, model(x), name="training_wrapper")


def to_dataset(split: Split, batch_size: int, shuffle: bool, seed: int) -> Any:
    import tensorflow as tf

    onehot = np.eye(len(split.class_names), dtype=np.float32)[split.labels]
    data = tf.data.Dataset.from_tensor_slices((split.images, onehot))
    if shuffle:
        data = data.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=2)
    return data.prefetch(2)


def class_weights(split: Split) -> dict[int, float]:
    """Inverse-frequency ("balanced") weights, scikit-learn's; a class without training images gets 0."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(split.labels)
    weights = compute_class_weight("balanced", classes=present, y=split.labels)
    found = dict(zip(present.tolist(), weights.tolist(), strict=True))
    return {i: float(found.get(i, 0.0)) for i in range(len(split.class_names))}


def set_trainable(model: Any, spec: ModelSpec, top_layers: int) -> int:
    """Freeze the backbone except its top ``top_layers`` layers; return how many layers with weights were
    unfrozen. BatchNorm stays frozen on pretrained backbones; a backbone trained from scratch
    (``weights: none``) needs batch statistics, so there it trains too."""
    import keras

    backbone = model.get_layer(spec.backbone_layer)
    backbone.trainable = top_layers > 0
    freeze_batchnorm = spec.weights != "none"
    unfrozen = 0
    layers = backbone.layers
    cut = max(0, len(layers) - top_layers)
    for i, layer in enumerate(layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        trainable = i >= cut and not (is_batchnorm and freeze_batchnorm)
        layer.trainable = trainable
        unfrozen += int(trainable and bool(layer.weights))
    return unfrozen


class BestEpoch:
    """The best epoch by validation loss over every phase (its weights are what train keeps), and early
    stopping within a phase (against that phase's own best, so that a fine-tuning phase warming up from
    a good head is not stopped before it gets going)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.phase_ends: list[str] = []
        """Why each phase ended, in words: a changed epoch count with no visible effect says why here."""

    def callback(self, model: Any, phase: str, epochs: int) -> Any:
        import keras

        tracker = self

        class _Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
                self.phase_best, self.phase_best_epoch, self.wait, self.ran = float("inf"), -1, 0, 0

            def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
                best = f"its best val_loss {self.phase_best:.4f} at epoch {self.phase_best_epoch + 1}"
                if self.ran < epochs:
                    why = (
                        f"{phase}: stopped early after {self.ran} of {epochs} epochs: val_loss did not improve "
                        f"for {tracker.patience} epochs (train.early_stopping_patience); {best}"
                    )
                else:
                    why = f"{phase}: ran all {epochs} epochs; {best}"
                tracker.phase_ends.append(why)
                logger.info(f"train: {why}")

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.ran += 1
                current = float((logs or {}).get("val_loss", np.inf))
                if current < tracker.best:
                    tracker.best, tracker.best_epoch = current, epoch
                    tracker.best_weights = model.get_weights()
                if current < self.phase_best:
                    self.phase_best, self.phase_best_epoch, self.wait = current, epoch, 0
                    return
                self.wait += 1
                if tracker.patience and self.wait >= tracker.patience:
                    self.model.stop_training = True

        return _Callback()

    def consider(self, val_loss: float, epoch: int, model: Any) -> None:
        """An epoch scored outside Keras' fit (the logistic head)."""
        if val_loss < self.best:
            self.best, self.best_epoch, self.best_weights = val_loss, epoch, model.get_weights()

    def restore(self, model: Any) -> None:
        if self.best_weights is not None:
            model.set_weights(self.best_weights)


def _epoch_reporter(phase: str, total_epochs: int, on_epoch: EpochCallback | None, history: list) -> Any:
    import keras

    class _Reporter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            record = {
                "epoch": epoch + 1,
                "phase": phase,
                "loss": float(logs.get("loss", np.nan)),
                "accuracy": float(logs.get("accuracy", np.nan)),
                "val_loss": float(logs.get("val_loss", np.nan)),
                "val_accuracy": float(logs.get("val_accuracy", np.nan)),
                "learning_rate": float(np.asarray(self.model.optimizer.learning_rate)),
                "seconds": time.monotonic() - self._started,
            }
            history.append(record)
            logger.info(
                f"train: epoch {record['epoch']}/{total_epochs} ({phase}) loss={record['loss']:.4f} "
                f"acc={record['accuracy']:.3f} val_loss={record['val_loss']:.4f} "
                f"val_acc={record['val_accuracy']:.3f} [{record['seconds']:.1f}s]"
            )
            if on_epoch is not None:
                on_epoch(record)

    return _Reporter()


def validation_metrics(model: Any, split: Split, batch_size: int) -> dict[str, float]:
    probs = model.predict(to_dataset(split, batch_size, False, 0), verbose=0)
    return validation_scores(split.labels, probs, len(split.class_names))


def head_model(model: Any, spec: ModelSpec) -> Any:
    """The layers after the head's input (dropout, optional dense, softmax) as a model on pooled features."""
    import keras

    source = head_input_layer(model, spec)
    inputs = keras.Input((int(source.output.shape[-1]),), dtype="float32", name="features")
    x = inputs
    for layer in model.layers[model.layers.index(source) + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name="head")


def with_copies(x: np.ndarray, labels: np.ndarray, copies: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Images' features followed by those of their augmented copies ``(copies, images, features)``, labelled."""
    if copies is None or not len(copies):
        return x, labels
    return np.concatenate([x, *copies]), np.tile(labels, len(copies) + 1)


def grouped_cv_losses(
    x: np.ndarray,
    split: Split,
    grid: list[float],
    class_weight: str | None,
    folds: int,
    seed: int,
    copies: np.ndarray | None = None,
) -> dict[float, float]:
    """Out-of-fold log loss of each ``C`` over stratified folds of ``split`` that never divide a group.

    Slices of one scan on both sides of a fold would reward a weak regularisation that memorises scans;
    grouped folds score ``C`` on scans the fit has not seen, with the whole training split (not the few
    validation images) as the judge. The standardisation is fitted inside each fold, as in the final fit;
    so are augmented ``copies`` (a fold fits on its own images' copies, and scores original images).
    """
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray(split.groups or split.paths)
    distinct = len(set(groups))
    if distinct < 2:
        raise DataError(
            f"train.head_selection 'grouped-cv' needs at least 2 groups of training images, found {distinct}; "
            "set train.head_selection to 'validation'"
        )
    folds = min(folds, distinct)
    started = time.monotonic()
    labels = np.arange(len(split.class_names))
    oof = {c: np.zeros((len(split), len(labels))) for c in grid}
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer groups than folds: sklearn warns, the folds still hold
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fit_idx, held_idx in splitter.split(x, split.labels, groups):
            fit_x, fit_y = with_copies(
                x[fit_idx], split.labels[fit_idx], None if copies is None else copies[:, fit_idx]
            )
            for c in grid:
                fitted, scaler = _fit_standardised(fit_x, fit_y, c, class_weight)
                oof[c][np.ix_(held_idx, fitted.classes_)] = fitted.predict_proba(scaler.transform(x[held_idx]))
    clipped = {c: np.clip(p, 1e-15, None) for c, p in oof.items()}  # a class a fold never saw: not log(0)
    losses = {c: float(log_loss(split.labels, p / p.sum(1, keepdims=True), labels=labels)) for c, p in clipped.items()}
    logger.info(
        f"train: logistic head, grouped {folds}-fold cross-validation over train ({time.monotonic() - started:.0f} s): "
        + " ".join(f"C={c:g} loss={loss:.4f}" for c, loss in losses.items())
    )
    return losses


def judged_loss(record: dict[str, Any]) -> float:
    """The loss that chose among the logistic head's ``C`` values: cross-validation's when it ran."""
    return record.get("cv_loss", record["val_loss"])


@dataclass(frozen=True)
class LinearHead:
    """A fitted logistic regression as the ``probabilities`` layer's weights, standardisation folded in."""

    kernel: np.ndarray
    bias: np.ndarray

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, kernel=self.kernel, bias=self.bias)
        return buffer.getvalue()


def _linear_head(fitted: Any, scaler: Any, num_classes: int) -> LinearHead:
    """``w / sigma`` and ``b - (mu / sigma) w``: the layer computes exactly the regression's probabilities."""
    coef = np.zeros((num_classes, len(scaler.scale_)))
    intercept = np.full(num_classes, -1e4)  # a class absent from the fit is never predicted
    rows, offsets = fitted.coef_, fitted.intercept_
    if len(fitted.classes_) == 2:  # scikit-learn keeps one logit for two classes: as softmax, +-half of it
        rows, offsets = np.vstack([-rows[0] / 2, rows[0] / 2]), np.array([-offsets[0] / 2, offsets[0] / 2])
    coef[fitted.classes_], intercept[fitted.classes_] = rows, offsets
    kernel = (coef / scaler.scale_).T
    bias = intercept - coef @ (scaler.mean_ / scaler.scale_)
    return LinearHead(kernel.astype(np.float32), bias.astype(np.float32))


def _fit_standardised(x: np.ndarray, labels: np.ndarray, c: float, class_weight: str | None) -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    return LogisticRegression(C=c, max_iter=5000, class_weight=class_weight).fit(scaler.transform(x), labels), scaler


@dataclass
class LogisticHead:
    tried: list[dict[str, Any]]
    """Every ``C`` with its validation (and cross-validation) scores."""
    refit: LinearHead | None = None
    """The kept ``C`` fitted again on train + validation, when asked."""

    @property
    def kept(self) -> dict[str, Any]:
        return min(self.tried, key=judged_loss)


def fit_logistic_head(
    model: Any,
    spec: ModelSpec,
    features: dict[str, np.ndarray],
    train: Split,
    val: Split,
    config: TrainConfig,
    refit: bool = False,
    copies: dict[str, np.ndarray] | None = None,
) -> LogisticHead:
    """Fit the softmax layer as a multinomial logistic regression (scikit-learn) on standardised features.

    Each ``head_c`` is scored by grouped cross-validation over train (``train.head_selection``
    'grouped-cv') or fitted on train and scored by validation log loss ('validation'); the best one is fitted
    on train and folded into the ``probabilities`` layer (:func:`_linear_head`). With ``refit`` the kept
    ``C`` is also fitted on train + validation: scans the train-only fit never saw, for evaluate-and-register
    to register once validation has chosen and calibrated the candidate (``evaluate.refit``). Every fit
    adds the features of its images' augmented ``copies`` (split name -> ``(copies, images, features)``).
    Deterministic for a given ``train.seed`` (which only shuffles the folds).
    """
    layer = model.get_layer("probabilities")
    if int(layer.kernel.shape[0]) != features["train"].shape[1]:
        raise ConfigError(
            "train.head 'logistic' fits a linear head: set model.dense_units to 0, or use train.head 'keras'"
        )
    weights = "balanced" if config.class_weights else None
    num_classes = len(spec.class_names)
    cv: dict[float, float] = {}
    copies = copies or {}
    if config.head_selection == "grouped-cv":
        cv = grouped_cv_losses(
            features["train"], train, config.head_c, weights, config.head_cv_folds, config.seed, copies.get("train")
        )
    x_train, y_train = with_copies(features["train"], train.labels, copies.get("train"))
    tried, best = [], None
    for c in config.head_c:
        started = time.monotonic()
        fitted, scaler = _fit_standardised(x_train, y_train, c, weights)
        probabilities = np.zeros((len(val), num_classes))
        probabilities[:, fitted.classes_] = fitted.predict_proba(scaler.transform(features["val"]))
        scores = validation_scores(val.labels, probabilities, num_classes)
        record = {"c": c, **scores, "seconds": time.monotonic() - started}
        if cv:
            record["cv_loss"] = cv[c]
        tried.append(record)
        logger.info(
            f"train: logistic head C={c:g}: val_loss={scores['val_loss']:.4f} val_acc={scores['val_accuracy']:.3f} "
            f"val_macro_f1={scores['val_macro_f1']:.3f}"
        )
        if best is None or judged_loss(record) < judged_loss(best[0]):
            best = (record, _linear_head(fitted, scaler, num_classes))
    record, linear = best
    layer.set_weights([linear.kernel, linear.bias])
    judge = "grouped cross-validation" if cv else "validation"
    logger.info(f"train: logistic head: kept C={record['c']:g} (lowest {judge} log loss of {len(tried)})")
    result = LogisticHead(tried)
    if refit:
        x_val, y_val = with_copies(features["val"], val.labels, copies.get("val"))
        fitted, scaler = _fit_standardised(
            np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), record["c"], weights
        )
        result.refit = _linear_head(fitted, scaler, num_classes)
        logger.info(
            f"train: logistic head C={record['c']:g} refitted on {len(train)} train + {len(val)} val images"
            + (f" and {len(copies['train'])} augmented copies of each" if "train" in copies else "")
        )
    return result


def _fit_end_to_end(
    model: Any,
    train: Split,
    val: Split,
    config: TrainConfig,
    loss: Any,
    rate: Any,
    weights: dict[int, float] | None,
    first_epoch: int,
    epochs: int,
    callbacks: list[Any],
) -> None:
    """One phase through the augmenting wrapper on images (frozen end to end, or fine-tuning); its epochs are
    numbered on from ``first_epoch`` so that both phases share one history."""
    import keras

    wrapper = training_model(model, config)
    wrapper.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=["accuracy"])
    wrapper.fit(
        to_dataset(train, config.batch_size, True, config.seed),
        validation_data=to_dataset(val, config.batch_size, False, 0),
        initial_epoch=first_epoch,
        epochs=first_epoch + epochs,
        class_weight=weights,
        shuffle=False,  # tf.data already shuffles, reproducibly
        callbacks=callbacks,
        verbose=0,
    )


def learning_rate(config: TrainConfig, base: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0) -> Any:
    """Constant, or cosine decay to 0 over the phase after a linear warm-up (which keeps the first
    fine-tuning steps from wrecking the pretrained features with a cold optimizer)."""
    import keras

    if config.lr_schedule != "cosine":
        return base
    warmup = min(warmup_epochs, max(0, epochs - 1)) * steps_per_epoch
    decay = max(1, epochs * steps_per_epoch - warmup)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(0.0, decay, warmup_target=base, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(base, decay)


def train_model(
    base_dir: str | Path,
    dataset_dir: str | Path,
    config: TrainConfig,
    output_dir: str | Path,
    on_epoch: EpochCallback | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the base model in ``base_dir`` on the data set; save the best model to ``output_dir``.

    ``extra`` is recorded in the saved model's ``radpipe.json`` (candidate name, MLflow run id).
    """
    import keras

    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    model, spec = load_model_dir(base_dir)
    train = load_split(dataset_dir, "train", spec.preprocessing, spec.class_names)
    val = load_split(dataset_dir, "val", spec.preprocessing, spec.class_names)
    if len(val) == 0:
        raise DataError("the data set has no validation images; ingest makes a val split, re-run ingest")
    logger.info(f"train: {len(train)} training and {len(val)} validation images, classes {spec.class_names}")
    weights = class_weights(train) if config.class_weights else None
    if config.head == "logistic" and not config.fine_tune_layers and config.epochs != TrainConfig().epochs:
        logger.warning(
            f"train: train.epochs={config.epochs} has no effect: the logistic head (train.head) is fit by "
            "scikit-learn, and fine-tuning is off (train.fine_tune_layers=0)"
        )
    best = BestEpoch(config.early_stopping_patience)
    history: list[dict[str, Any]] = []
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    total = config.epochs + config.fine_tune_epochs
    steps = int(np.ceil(len(train) / config.batch_size))
    extra = dict(extra or {})
    attachments: dict[str, bytes] = {}
    set_trainable(model, spec, 0)

    if config.head_on_features:
        features = backbone_features(
            model,
            spec,
            [train, val],
            read_manifest(dataset_dir)["fingerprint"],
            config.feature_cache,
            config.batch_size,
            Copies(config.augmentation, config.augmented_copies, config.seed),
        )
        extra["features"] = {
            "key": features.key.digest(),
            "cache_hit": features.cache_hit,
            "seconds": features.seconds,
            "augmented_copies": config.augmented_copies,
        }
        onehot = np.eye(len(spec.class_names), dtype=np.float32)
        if config.head == "logistic":
            # A head that fine-tuning goes on to change has no train + val twin to register.
            head = fit_logistic_head(
                model, spec, features.by_split, train, val, config, not config.fine_tune_layers, features.copies
            )
            tried = head.tried
            extra["logistic_head"] = tried
            if head.refit is not None:
                attachments[REFIT_HEAD_FILE] = head.refit.to_npz()
                extra["refit_head"] = {
                    "file": REFIT_HEAD_FILE,
                    "c": head.kept["c"],
                    "images": {"train": len(train), "val": len(val)},
                    "augmented_copies": len(features.copies.get("train", ())),
                }
            # The kept head is "epoch 1" of the run; a fine-tuning phase must beat it on the same loss.
            probabilities = head_model(model, spec).predict(features.by_split["val"], verbose=0)
            best.consider(float(loss(onehot[val.labels], probabilities)), 0, model)
            kept = head.kept
            judge = "grouped cross-validation over train" if "cv_loss" in kept else "validation"
            best.phase_ends.append(
                f"head: scikit-learn's logistic regression fit to convergence for each of {len(tried)} C values "
                f"(train.head_c), kept C={kept['c']:g} (lowest {judge} log loss); train.epochs and "
                "train.learning_rate apply to train.head 'keras' and to fine-tuning only"
            )
            record = {
                "epoch": 1,
                "phase": "head",
                "loss": float("nan"),
                "accuracy": float("nan"),
                "val_loss": kept["val_loss"],
                "val_accuracy": kept["val_accuracy"],
                "learning_rate": float("nan"),
                "seconds": sum(r["seconds"] for r in tried),
            }
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        else:
            head = head_model(model, spec)
            head.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss, metrics=["accuracy"])
            x_train, y_train = with_copies(features.by_split["train"], train.labels, features.copies.get("train"))
            head.fit(
                x_train,
                onehot[y_train],
                validation_data=(features.by_split["val"], onehot[val.labels]),
                batch_size=config.batch_size,
                epochs=config.epochs,
                class_weight=weights,
                shuffle=True,
                callbacks=[
                    best.callback(model, "head", config.epochs),
                    _epoch_reporter("head", total, on_epoch, history),
                ],
                verbose=0,
            )
    else:  # the frozen phase end to end, with augmentation: slower, kept for comparison (bench/)
        rate = learning_rate(config, config.learning_rate, config.epochs, steps)
        callbacks = [best.callback(model, "frozen", config.epochs), _epoch_reporter("frozen", total, on_epoch, history)]
        _fit_end_to_end(model, train, val, config, loss, rate, weights, 0, config.epochs, callbacks)
    if config.fine_tune_layers:
        best.restore(model)  # fine-tune from the best head, not the last epoch's
        frozen_epochs = len(history)
        unfrozen = set_trainable(model, spec, config.fine_tune_layers)
        logger.info(f"train: fine-tuning the top {config.fine_tune_layers} backbone layers ({unfrozen} with weights)")
        rate = learning_rate(
            config, config.fine_tune_learning_rate, config.fine_tune_epochs, steps, config.fine_tune_warmup_epochs
        )
        callbacks = [
            best.callback(model, "fine-tune", config.fine_tune_epochs),
            _epoch_reporter("fine-tune", total, on_epoch, history),
        ]
        _fit_end_to_end(
            model, train, val, config, loss, rate, weights, frozen_epochs, config.fine_tune_epochs, callbacks
        )
    best.restore(model)
    set_trainable(model, spec, 0)
    val_metrics = validation_metrics(model, val, config.batch_size)
    logger.info(
        f"train: best epoch {best.best_epoch + 1}: val_loss={val_metrics['val_loss']:.4f} "
        f"val_acc={val_metrics['val_accuracy']:.3f} val_macro_f1={val_metrics['val_macro_f1']:.3f}"
    )
    spec = spec.with_extra(
        train_config=config.to_dict(),
        best_epoch=best.best_epoch + 1,
        phase_ends=best.phase_ends,
        val_metrics=val_metrics,
        history=history,
        class_counts={"train": train.class_counts(), "val": val.class_counts()},
        **extra,
    )
    save_model_dir(model, spec, output_dir, attachments)
    return TrainResult(spec, history, best.best_epoch + 1, val_metrics, time.monotonic() - started)

"""srrl-tune: SRRL distillation tuned with Ray Tune, in three layers (docs/architecture.md): ``tuner.core`` (one
trial: config, data, models, losses, training loop, teacher, verdict), ``tuner.tracking`` (the MLflow record) and
``tuner.driver`` (the Ray Tune sweep)."""

__version__ = "0.1.0"

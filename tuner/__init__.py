"""srrl-tune core: SRRL distillation (Distiller, model zoo, connectors, data, teacher, training loop)."""

__version__ = "0.1.0"

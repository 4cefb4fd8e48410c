"""The trial core: one distillation run from a typed config, with no Ray or MLflow at import (docs/architecture.md)."""

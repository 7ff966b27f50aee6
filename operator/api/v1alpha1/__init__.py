"""llmops.dev/v1alpha1: the five kinds of the model lifecycle."""

from .common import API_VERSION, GROUP, VERSION, Resource
from .dataset import Dataset
from .deployment import Deployment
from .evaluation import Evaluation
from .finetune import FineTune
from .pretrainjob import PretrainJob

KINDS: dict[str, type[Resource]] = {
    kind.model_fields["kind"].default: kind for kind in (Dataset, PretrainJob, FineTune, Evaluation, Deployment)
}
"""Every kind by name, in lifecycle order."""

__all__ = ["API_VERSION", "GROUP", "KINDS", "VERSION", "Dataset", "Deployment", "Evaluation", "FineTune",
           "PretrainJob", "Resource"]

"""What a spec may leave unset and the operator fills in, in one place: where a resource's output goes and which
image runs its workload. Every kind, the cleanup of artifacts and the Deployment's online evaluation use these."""

from __future__ import annotations

from llmops.operator.api.v1alpha1.common import ImageSpec, Resource
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.layout import join


def default_output(resource: Resource, settings: OperatorSettings) -> str:
    """`<artifactRoot>/<namespace>/<plural>/<name>`: where a resource writes when `spec.output.uri` is unset."""
    meta = resource.metadata
    return join(settings.artifact_root, meta.namespace or "default", resource.names.plural, meta.name)


def output_root(resource: Resource, settings: OperatorSettings) -> str:
    """The root everything a resource writes goes under: `spec.output.uri`, else the default."""
    output = getattr(resource.spec, "output", None)
    return (output.uri if output is not None else None) or default_output(resource, settings)


def workload_image(image: ImageSpec, settings: OperatorSettings, gpus: int = 0) -> str:
    """The spec's image, else the operator's default (the CUDA variant when GPUs are asked for)."""
    return image.image or (settings.trainer_cuda_image if gpus else settings.trainer_image)

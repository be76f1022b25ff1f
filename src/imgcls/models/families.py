"""Imports every family module so that its builders register themselves."""

from . import (  # noqa: F401
    densenet,
    inception,
    mobilenet,
    resnet,
    seed,
    squeezenet,
    vgg,
    xception,
)

"""Imports every family module so that its builders register themselves."""

from . import (  # noqa: F401
    densenet,
    fastnet,
    inception,
    mobilenet,
    resnet,
    resnet9,
    seed,
    squeezenet,
    vgg,
    xception,
)

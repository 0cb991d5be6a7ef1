"""mtgan: Meta Transfer GAN for few-shot image generation.

Phases are importable without the command line: :func:`mtgan.phases.pretrain.pretrain`,
:func:`mtgan.phases.meta_train.meta_train`, :func:`mtgan.phases.adapt.adapt`.
"""

__version__ = "0.1.0"

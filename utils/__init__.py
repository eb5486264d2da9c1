"""The course library: what the chapters build, packaged so later chapters can reuse it.

One module per topic: ``runtime`` (modes, device, seeds), ``zoo`` (model registry),
``images`` (loading photos), ``shapes`` (ShapesWorld), ``plotting``, ``checks`` (exercise
checkers), ``claims`` (what the text claims about numbers that vary between computers),
``training`` (the classifier loop and learning-rate schedules), and the chapters' own:
``vit``; ``clip``; ``qformer``, ``blip2``, ``chat``, ``bridges``; ``llava``, ``instruct`` (a
package), ``patches``, ``beyond_projector``; ``diffusion``. ``tiny_lm`` is the small language
model inside the tiny BLIP-2 and LLaVA.

Shapes ledger -- the letters used in every shape comment:
    B batch             C channels          H, W image height, width
    P patch size        N patches           D model width
    nh heads            hs head size (D / nh)
    L text tokens       Q query tokens      V vocabulary size
    T diffusion steps   K objects in a scene
"""

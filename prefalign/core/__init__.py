"""The shared alignment core: knows nothing about images, tokens or noise levels (see :mod:`prefalign.families`)."""

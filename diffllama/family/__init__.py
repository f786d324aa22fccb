"""The bundled model family's production, apart from the lens: generated data (``corpus``), what
each task's model reads (``features``), training (``train``) and held-out evaluation (``evaluate``)."""

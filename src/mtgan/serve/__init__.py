"""``mtgan serve``: a local web page to adapt a run to dropped images and browse the results
(:func:`mtgan.serve.app.create_app`; needs the ``serve`` extra)."""

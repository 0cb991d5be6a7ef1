"""Collection of the docstring examples under src/: the web page's modules import the `serve`
extra, so their examples are collected only where it is installed (it is in `.[test]`)."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("fastapi") else ["src/mtgan/serve/*"]

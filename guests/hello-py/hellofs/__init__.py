"""hellofs in Python: the toy format of guests/hello/README.md.

The package knows nothing of WebAssembly: `app.py` (the component's entry
module) hands it a device and turns its answers and errors into the WIT
types, so the parsing here can also run under a plain CPython.
"""

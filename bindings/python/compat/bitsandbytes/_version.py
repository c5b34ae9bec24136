"""The one place that says which bitsandbytes API this layer implements.

API_VERSION is the bitsandbytes release whose public Python API (names, arguments, state-dict
keys, torch.ops schemas) the layer follows. The distribution's version is API_VERSION with the
local label `+bnb`, so `importlib.metadata.version("bitsandbytes")` and `bitsandbytes.__version__`
compare as that release in version checks (PEP 440 ignores nothing but orders the local label
after the plain release) while saying honestly that bnb serves it.
"""

API_VERSION = "0.50.2"
__version__ = API_VERSION + "+bnb"

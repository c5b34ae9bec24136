"""One message for every research entry point bnb does not implement."""


def message(name):
    return (f"bitsandbytes.{name} is not implemented by bnb's compatibility layer: it belongs to the "
            "experimental research API of older bitsandbytes releases (not part of the 0.50 API this layer "
            "serves), and bnb has no kernels for it")


def not_served(name):
    def call(*args, **kwargs):
        raise NotImplementedError(message(name))
    call.__name__ = name.rsplit(".", 1)[-1]
    call.__qualname__ = call.__name__
    call.__doc__ = f"Not implemented by bnb (raises NotImplementedError): bitsandbytes.{name}."
    return call

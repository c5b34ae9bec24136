"""`python -m bnb`: what the library found (like `bnb info`)."""

import platform
import sys


def main():
    try:
        import bnb
    except ImportError as e:
        print(f"bnb: cannot load the library: {e}", file=sys.stderr)
        return 1
    print(f"bnb {bnb.__version__}")
    print(f"library:  {bnb.library_path}")
    print(f"python:   {platform.python_version()} ({sys.executable})")
    try:
        import numpy

        print(f"numpy:    {numpy.__version__}")
    except ImportError:  # pragma: no cover - numpy is a dependency
        print("numpy:    not installed")
    from bnb import _arrays

    print(f"bfloat16: {'ml_dtypes' if _arrays.NP_BF16 is not None else 'uint16 bit patterns (ml_dtypes not installed)'}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "none"
        print(f"torch:    {torch.__version__} (GPUs: {gpus})")
    except ImportError:
        print("torch:    not installed")
    print("backends:")
    for info in bnb.backends():
        state = "available" if info["available"] else "unavailable"
        print(f"  {info['name']:<5} {state:<11} devices={info['device_count']}  {info['detail']}")
    return _report_host_context()


def _report_host_context():
    """Whether numpy arrays can run under this environment (BNB_BACKEND, BNB_NUM_THREADS, ...):
    the error a first call would raise, or the context it would use. Exit status 1 for an invalid
    value; a valid BNB_BACKEND=cuda (GPU tensors only) is reported but not a failure."""
    import os

    from bnb import _lib

    settings = [f"{name}={os.environ[name]}" for name in ("BNB_BACKEND", "BNB_NUM_THREADS", "BNB_LOG_LEVEL",
                                                          "BNB_CPU_MAX_TARGET", "BNB_CHECK_FINITE")
                if name in os.environ]
    print(f"env:      {' '.join(settings) if settings else '(no BNB_* settings)'}")
    try:
        _lib.context(_lib.BACKEND_CPU, 0)
    except _lib.Error as e:
        print(f"numpy:    cannot run: {e}")
        return 1 if isinstance(e, ValueError) else 0
    print("numpy:    runs on the cpu backend")
    return 0


if __name__ == "__main__":
    sys.exit(main())

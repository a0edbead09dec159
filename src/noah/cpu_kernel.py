"""Old name of :mod:`noah.head.cpu_kernel`, kept so ``import noah.cpu_kernel`` goes on working.

This module replaces itself in ``sys.modules`` with :mod:`noah.head.cpu_kernel`, so both names are
the same module object (patching an attribute through one is seen through the other).
"""

import sys

from noah.head import cpu_kernel as _moved

sys.modules[__name__] = _moved

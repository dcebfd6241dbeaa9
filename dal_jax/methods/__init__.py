"""Methods: an acquisition with its training-loss terms and round hooks, one file per method.

``get_method(name, **options)`` returns a :class:`Method` for every registered method and every
registered acquisition (a plain acquisition is a method without terms or hooks). Training-only
methods (``mixup``, ``fixmatch``, ``ceal``) add to any other with :func:`combine`.

Writing a method: make a file like ``dal_jax/methods/mixup.py`` (a ``make(**options) ->
Method`` and one ``register_method`` line) and import it below, or from your own module with
``--import=your.module``.
"""

from dal_jax.methods._base import METHODS
from dal_jax.methods._base import Method
from dal_jax.methods._base import RoundHook
from dal_jax.methods._base import Setup
from dal_jax.methods._base import combine
from dal_jax.methods._base import get_method
from dal_jax.methods._base import method_options
from dal_jax.methods._base import names
from dal_jax.methods._base import register_method
from dal_jax.methods._base import split_options
from dal_jax.acquisition._learned import learned_acquisition
from dal_jax.acquisition._learned import register_learned

# One line per method file.
from dal_jax.methods import ceal  # noqa: E402,F401
from dal_jax.methods import dfal  # noqa: E402,F401
from dal_jax.methods import fixmatch  # noqa: E402,F401
from dal_jax.methods import ll4al  # noqa: E402,F401
from dal_jax.methods import mixup  # noqa: E402,F401
from dal_jax.methods import ta_vaal  # noqa: E402,F401
from dal_jax.methods import waal  # noqa: E402,F401
